package stress

import (
	"math/rand/v2"
	"time"

	"github.com/kflex-go/kflex/mcs"
)

// aims are what a kill waits for before the SIGKILL: anything (at once), a
// goroutine holding a lock, waiting for one, in the allocator; in a build with
// mcs's fault points (-tags kflexfault, mcs.FaultInjection) also a fault
// point, at which the victim's next incarnation kills itself (faultAims).
var aims = func() []string {
	a := []string{stIdle: "anywhere", stWaiting: "waiting", stHolding: "holding", stAllocator: "allocating"}
	if mcs.FaultInjection {
		a = append(a, faultAims...)
	}
	return a
}()

// faultAims are the fault points a kill can name: the lock protocol's steps,
// then the one in Attach. Each is reached only by the process it is armed in.
var faultAims = append(append([]string(nil), mcs.FaultPoints...), mcs.FaultAttachClaimed)

// faultEnv is the environment variable that arms mcs's fault point in a
// worker (mcs/fault_on.go reads it).
const faultEnv = "KFLEX_FAULT"

// faultPoint is the fault point that aim names, or "".
func faultPoint(aim int) string {
	if aim < stAllocator+1 {
		return ""
	}
	return aims[aim]
}

// schedule is the source of the parent's choices: Config.Schedule's bytes
// first, one a choice, then the seeded generator.
type schedule struct {
	script []byte
	rng    *rand.Rand
}

// next returns the script's next byte, if one is left.
func (s *schedule) next() (byte, bool) {
	if len(s.script) == 0 {
		return 0, false
	}
	b := s.script[0]
	s.script = s.script[1:]
	return b, true
}

// intN is a choice in [0, n).
func (s *schedule) intN(n int) int {
	if b, ok := s.next(); ok {
		return int(b) % n
	}
	return s.rng.IntN(n)
}

// delay is a pause in [0, d].
func (s *schedule) delay(d time.Duration) time.Duration {
	if b, ok := s.next(); ok {
		return d * time.Duration(b) / 255
	}
	return time.Duration(s.rng.Int64N(int64(d) + 1))
}
