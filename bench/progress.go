package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress shows how far a phase is: a bar redrawn in place on a terminal, a line every
// ten seconds otherwise.
type progress struct {
	w        io.Writer
	label    string
	total    time.Duration
	terminal bool
	last     time.Duration
}

func newProgress(w io.Writer, label string, total time.Duration) *progress {
	p := &progress{w: w, label: label, total: total}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

func (p *progress) update(elapsed time.Duration, extra string) {
	if p.w == io.Discard {
		return
	}
	if p.terminal {
		const width = 30
		n := min(width, int(float64(width)*elapsed.Seconds()/p.total.Seconds()))
		fmt.Fprintf(p.w, "\r%-10s [%s%s] %3.0fs/%.0fs %s\x1b[K", p.label, strings.Repeat("#", n), strings.Repeat(".", width-n),
			elapsed.Seconds(), p.total.Seconds(), extra)
		return
	}
	if elapsed-p.last >= 10*time.Second {
		p.last = elapsed
		fmt.Fprintf(p.w, "%s %.0fs/%.0fs %s\n", p.label, elapsed.Seconds(), p.total.Seconds(), extra)
	}
}

func (p *progress) done() {
	if p.terminal && p.w != io.Discard {
		fmt.Fprintln(p.w)
	}
}
