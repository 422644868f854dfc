package tenancy_test

import (
	"os"
	"testing"

	"github.com/gatehouse/gatehouse/secrets/vaulttest"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	vaulttest.StopShared()
	os.Exit(code)
}
