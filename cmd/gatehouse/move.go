package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/mattn/go-isatty"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// runPlacement runs "tenant promote SLUG" and "tenant demote SLUG": the
// move, start to end, with live progress.
func runPlacement(ctx context.Context, dir tenancy.Direction, args []string, std stdio) error {
	var cfg config
	fs := flag.NewFlagSet("tenant "+string(dir), flag.ContinueOnError)
	cfg.flags(fs)
	var o tenancy.MoveOptions
	old := map[tenancy.Direction]string{tenancy.Promote: "shared", tenancy.Demote: "silo"}[dir]
	if dir == tenancy.Promote {
		fs.StringVar(&o.SiloCluster, "silo-cluster", "", "admin URL of the cluster for the silo (default: the primary's)")
	}
	fs.DurationVar(&o.MaxPause, "max-pause", tenancy.DefaultMaxPause, "longest the tenant's writes may wait at the fence before they get 503")
	keepFlag := "keep-" + old + "-for"
	fs.DurationVar(&o.KeepOldFor, keepFlag, tenancy.DefaultKeepOldFor, "how long to keep the tenant's old "+old+" copy after the flip")
	fs.BoolVar(&o.Purge, "purge", false, "delete the old "+old+" copy right after the flip")
	asJSON := fs.Bool("json", false, "print the finished move as JSON")
	var slug string
	if err := positional(fs, args, std, 1, &slug); err != nil {
		return err
	}
	// Begin refuses --purge with a --keep-*-for given, as the operator API
	// does.
	fs.Visit(func(f *flag.Flag) { o.KeepOldForSet = o.KeepOldForSet || f.Name == keepFlag })
	return withMover(ctx, cfg, std, func(m *tenancy.Mover) error {
		mv, err := m.Begin(ctx, slug, dir, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(std.err, "%s of %s: move %s (resume with `gatehouse tenant move resume %[3]s`, roll back with `... abort %[3]s`)\n", dir, slug, mv.ID)
		return drive(ctx, m, mv.ID, std, *asJSON)
	})
}

// runMove runs "tenant move list|show|resume|abort|retire".
func runMove(ctx context.Context, args []string, std stdio) error {
	if len(args) == 0 {
		return usageErr("tenant move: want list, show, resume, abort or retire")
	}
	sub, args := args[0], args[1:]
	var cfg config
	fs := flag.NewFlagSet("tenant move "+sub, flag.ContinueOnError)
	cfg.flags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var arg string
	switch sub {
	case "list":
		pos, err := parse(fs, args, std)
		if err != nil {
			return err
		}
		if len(pos) > 1 {
			return usageErr("tenant move list: want at most a tenant's slug")
		}
		return withMover(ctx, cfg, std, func(m *tenancy.Mover) error {
			moves, err := m.List(ctx, strings.Join(pos, ""), 50)
			if err != nil {
				return err
			}
			if *asJSON {
				return json.NewEncoder(std.out).Encode(moves)
			}
			w := tabwriter.NewWriter(std.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tTENANT\tDIRECTION\tSTATE\tPHASE\tPAUSE\tSTARTED")
			for _, mv := range moves {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", mv.ID, mv.Slug, mv.Direction, mv.State, mv.Phase,
					pauseText(mv), mv.StartedAt.UTC().Format(time.DateTime))
			}
			return w.Flush()
		})
	case "retire":
		due := fs.Bool("due", false, "retire every move whose grace period is over")
		force := fs.Bool("force", false, "retire even if the move found the two copies different at the flip")
		pos, err := parse(fs, args, std)
		if err != nil {
			return err
		}
		if *due == (len(pos) == 1) || len(pos) > 1 {
			return usageErr("tenant move retire: want a move id, or --due")
		}
		return withMover(ctx, cfg, std, func(m *tenancy.Mover) error {
			if *due {
				done, err := m.RetireDue(ctx)
				for _, mv := range done {
					fmt.Fprintf(std.out, "retired move %s: the old copy is gone\n", mv.ID)
				}
				return err
			}
			id, err := moveID(pos[0])
			if err != nil {
				return err
			}
			if _, err := m.Retire(ctx, id, *force); err != nil {
				return err
			}
			fmt.Fprintf(std.out, "retired move %s: the old copy is gone\n", id)
			return nil
		})
	case "show", "resume", "abort":
		if err := positional(fs, args, std, 1, &arg); err != nil {
			return err
		}
	default:
		return usageErr("tenant move: unknown subcommand %q", sub)
	}
	id, err := moveID(arg)
	if err != nil {
		return err
	}
	return withMover(ctx, cfg, std, func(m *tenancy.Mover) error {
		switch sub {
		case "resume":
			return drive(ctx, m, id, std, *asJSON)
		case "abort":
			mv, err := m.Abort(ctx, id)
			if err != nil {
				return err
			}
			fmt.Fprintf(std.out, "aborted move %s: the tenant is where it was, and the move left nothing behind\n", mv.ID)
			return nil
		}
		mv, err := m.Get(ctx, id)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(std.out).Encode(mv)
		}
		printMove(std.out, mv)
		return nil
	})
}

func moveID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.UUID{}, problem.Errorf(problem.Invalid, "%q is not a move id", s)
	}
	return id, nil
}

func withMover(ctx context.Context, cfg config, std stdio, fn func(*tenancy.Mover) error) error {
	return withRegistry(ctx, cfg, std, func(r *tenancy.Registry) error { return fn(tenancy.NewMover(r)) })
}

// drive runs move id to its end, showing its progress on std.err, and
// its summary on std.out.
func drive(ctx context.Context, m *tenancy.Mover, id uuid.UUID, std stdio, asJSON bool) error {
	p := newProgress(std.err)
	mv, err := m.Run(ctx, id, p.show)
	p.done(mv)
	if err != nil {
		if mv != nil && mv.Running() && ctx.Err() == nil {
			return &problem.Error{Code: problem.CodeOf(err), Err: err, Message: fmt.Sprintf(
				"%s; the move stopped in phase %s: fix the cause and `gatehouse tenant move resume %s`, or roll back with `gatehouse tenant move abort %[3]s`",
				problem.MessageOf(err), mv.Phase, mv.ID)}
		}
		return err
	}
	if asJSON {
		return json.NewEncoder(std.out).Encode(mv)
	}
	printSummary(std.out, mv)
	return nil
}

// progress draws a running move: redrawn in place on a terminal, one line
// per change of phase (and per table copied) otherwise.
type progress struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	last  time.Time
	lines int
	phase tenancy.Phase
	seen  map[string]bool
}

func newProgress(w io.Writer) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, tty: ok && isatty.IsTerminal(f.Fd()), seen: map[string]bool{}}
}

func (p *progress) show(mv *tenancy.Move) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.tty {
		for _, name := range sortedTables(mv) {
			if t := mv.Tables[name]; t.State == "copied" && !p.seen[name] {
				p.seen[name] = true
				fmt.Fprintf(p.w, "%s  copied %s (%d rows)\n", time.Now().Format("15:04:05.000"), name, t.Copied)
			}
		}
		if mv.Phase != p.phase {
			p.phase = mv.Phase
			fmt.Fprintf(p.w, "%s  phase %s\n", time.Now().Format("15:04:05.000"), mv.Phase)
		}
		return
	}
	if time.Since(p.last) < 200*time.Millisecond && mv.Phase == p.phase {
		return
	}
	p.last, p.phase = time.Now(), mv.Phase
	var b strings.Builder
	printMove(&b, mv)
	if p.lines > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA\x1b[J", p.lines) // back up over the last drawing
	}
	p.lines = strings.Count(b.String(), "\n")
	io.WriteString(p.w, b.String())
}

func (p *progress) done(mv *tenancy.Move) {
	if mv == nil {
		return
	}
	p.last = time.Time{}
	p.show(mv)
}

func sortedTables(mv *tenancy.Move) []string {
	names := make([]string, 0, len(mv.Tables))
	for n := range mv.Tables {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// printMove writes where a move stands: its phase, lag and pause, and
// each table with a bar of its copy.
func printMove(w io.Writer, mv *tenancy.Move) {
	fmt.Fprintf(w, "%s %s  move %s  %s  phase %s", mv.Direction, mv.Slug, mv.ID, mv.State, mv.Phase)
	if mv.LagBytes >= 0 && !mv.Phase.Flipped() {
		fmt.Fprintf(w, "  lag %s", bytesText(mv.LagBytes))
	}
	if mv.Pause > 0 {
		fmt.Fprintf(w, "  write pause %s", pauseText(mv))
	}
	fmt.Fprintln(w)
	if mv.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", mv.Error)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, name := range sortedTables(mv) {
		t := mv.Tables[name]
		share := 1.0
		if t.Rows > 0 {
			share = min(float64(t.Copied)/float64(t.Rows), 1)
		}
		if t.State == "waiting" {
			share = 0
		}
		bar := strings.Repeat("#", int(share*20)) + strings.Repeat(".", 20-int(share*20))
		fmt.Fprintf(tw, "  %s\t[%s]\t%3.0f%%\t%d/%d\t%s\n", name, bar, share*100, t.Copied, t.Rows, t.State)
	}
	tw.Flush()
}

// printSummary is the last word on a finished run.
func printSummary(w io.Writer, mv *tenancy.Move) {
	var rows int64
	for _, t := range mv.Tables {
		rows += t.Rows
	}
	to := map[tenancy.Direction]string{tenancy.Promote: "promoted %s to a silo of its own", tenancy.Demote: "demoted %s to the shared database"}[mv.Direction]
	took := time.Duration(0)
	if mv.FlippedAt != nil {
		took = mv.FlippedAt.Sub(mv.StartedAt)
	}
	fmt.Fprintf(w, to+": flipped after %s, %d rows in %d tables verified; writes paused at most %s (%d fence raises, limit %s)\n",
		mv.Slug, took.Round(time.Millisecond), rows, len(mv.Tables), pauseText(mv), mv.FenceAttempts, mv.MaxPause)
	switch mv.State {
	case tenancy.MoveRetiring:
		fmt.Fprintf(w, "the old copy is kept until %s; remove it sooner with `gatehouse tenant move retire %s`\n",
			mv.RetireAfter.UTC().Format(time.DateTime+" MST"), mv.ID)
	case tenancy.MoveDone:
		fmt.Fprintln(w, "the old copy is removed")
	}
}

func pauseText(mv *tenancy.Move) string {
	if mv.Pause <= 0 {
		return "-"
	}
	return mv.Pause.Round(100 * time.Microsecond).String()
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
