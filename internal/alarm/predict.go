package alarm

// PredictAlarm says after how many more periods an alarm reaches ALARM if
// nothing changes: the range so far is marks (oldest first; a shorter
// series is taken as preceded by missing periods), the alarm is in state
// current, the next period closes as next and every later one breaches.
// It returns k >= 1, the number of periods closed when the state first
// becomes ALARM, and false when it does not within R+1 periods (after
// which the range holds nothing but breaching datapoints, so it never
// will).
//
// It gives the same answer as evaluating the series again after each
// appended period, in time linear in the range instead of quadratic, so
// that a window of a day of one-second periods can be predicted on every
// scan.
func PredictAlarm(cfg Config, marks []Mark, current State, next Mark) (int, bool, error) {
	if err := cfg.validateWindow(); err != nil {
		return 0, false, err
	}
	if current == "" {
		current = InitialState
	}
	if _, err := ParseState(string(current)); err != nil {
		return 0, false, err
	}
	if next > MarkBreaching {
		return 0, false, ErrToken
	}
	w := cfg.window()
	if len(marks) > w.r {
		marks = marks[len(marks)-w.r:]
	}
	// The series is the range padded to R marks and followed by the
	// predicted periods; the window after k of them is series[k : k+R].
	// reals lists the positions of real datapoints in the series and
	// breached[j] how many of reals[:j] breach, so that every count a
	// window needs is a difference of two entries.
	steps := w.r + 1
	pad := w.r - len(marks)
	// int32 halves the memory of a day's range (EvaluationPeriods is
	// bounded far below 2^31).
	reals := make([]int32, 0, len(marks)+steps)
	breached := make([]int32, 1, len(marks)+steps+1)
	add := func(pos int, m Mark) {
		if m == MarkMissing {
			return
		}
		b := breached[len(breached)-1]
		if m == MarkBreaching {
			b++
		}
		reals = append(reals, int32(pos))
		breached = append(breached, b)
	}
	for i, m := range marks {
		if m > MarkBreaching {
			return 0, false, ErrToken
		}
		add(pad+i, m)
	}
	for k := 1; k <= steps; k++ {
		m := MarkBreaching
		if k == 1 {
			m = next
		}
		add(w.r+k-1, m)
	}
	lo, hi := 0, 0 // reals[lo:hi] lie in the window
	state := current
	for k := 1; k <= steps; k++ {
		start, end := k, k+w.r
		for lo < len(reals) && int(reals[lo]) < start {
			lo++
		}
		for hi < len(reals) && int(reals[hi]) < end {
			hi++
		}
		var t tally
		t.real = hi - lo
		t.breaching = int(breached[hi] - breached[lo])
		if t.real > 0 {
			t.oldest = end - int(reals[lo])
		}
		recentFrom := max(lo, hi-w.n)
		t.recent = int(breached[hi] - breached[recentFrom])
		if t.real >= w.n {
			t.span = end - int(reals[hi-w.n])
		}
		state = t.decide(w, state).state
		if state == StateAlarm {
			return k, true, nil
		}
	}
	return 0, false, nil
}
