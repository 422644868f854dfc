package tenancy_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/internal/proctest"
)

func TestMain(m *testing.M) {
	proctest.Main(m)
}
