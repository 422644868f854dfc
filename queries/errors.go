package queries

import (
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/problem"
)

// IsUniqueViolation reports whether err is Postgres refusing a row whose
// key another row has (23505).
func IsUniqueViolation(err error) bool {
	e, ok := errors.AsType[*pgconn.PgError](err)
	return ok && e.Code == "23505"
}

// NotFound maps a missing row (pgx.ErrNoRows) to NotFound with msg; other
// errors pass as they are.
func NotFound(err error, msg string) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return problem.Errorf(problem.NotFound, "%s", msg)
	}
	return err
}
