package futex

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func TestWaitValueChanged(t *testing.T) {
	var w uint32 = 1
	start := time.Now()
	require.NoError(t, Wait(&w, 2, time.Second)) // *w != 2: returns at once
	assert.Less(t, time.Since(start), 500*time.Millisecond)
}

func TestWaitTimeout(t *testing.T) {
	var w uint32
	start := time.Now()
	require.NoError(t, Wait(&w, 0, 20*time.Millisecond))
	assert.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)
}

func TestWake(t *testing.T) {
	var w uint32
	done := make(chan struct{})
	go func() {
		for atomic.LoadUint32(&w) == 0 {
			Wait(&w, 0, -1)
		}
		close(done)
	}()
	// Wake until the sleeper is gone: it may not be asleep yet on the first try.
	atomic.StoreUint32(&w, 1)
	for {
		_, err := Wake(&w, 1)
		require.NoError(t, err)
		select {
		case <-done:
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// TestWaitAny: a sleeper on two words is woken by a wake on either and says
// which, returns at once when a word no longer holds its value, and times
// out.
func TestWaitAny(t *testing.T) {
	var a, b uint32
	start := time.Now()
	r, err := WaitAny([]*uint32{&a, &b}, []uint32{0, 1}, time.Second) // b != 1
	require.NoError(t, err)
	assert.Equal(t, Changed, r)
	assert.Less(t, time.Since(start), 500*time.Millisecond)

	start = time.Now()
	r, err = WaitAny([]*uint32{&a, &b}, []uint32{0, 0}, 20*time.Millisecond)
	require.NoError(t, err)
	assert.Equal(t, TimedOut, r)
	assert.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)

	for i, w := range []*uint32{&a, &b} {
		atomic.StoreUint32(&a, 0)
		atomic.StoreUint32(&b, 0)
		woken := make(chan int, 1)
		go func() {
			for {
				r, _ := WaitAny([]*uint32{&a, &b}, []uint32{0, 0}, 10*time.Second)
				if r >= 0 || atomic.LoadUint32(w) != 0 {
					woken <- r
					return
				}
			}
		}()
		time.Sleep(time.Millisecond) // most often asleep by now: the wake is what returns it
		atomic.StoreUint32(w, 1)
		func() {
			for {
				_, err := Wake(w, 1)
				require.NoError(t, err)
				select {
				case r := <-woken:
					if r >= 0 {
						assert.Equal(t, i, r, "the woken word's index")
					}
					return
				case <-time.After(time.Millisecond):
				}
			}
		}()
	}
}
