package tenancy_test

import (
	"os"
	"testing"

	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
