package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStress: kflex stress --json runs workers (this test binary, as
// stress-worker), prints one object with the keys, and exits 0 when
// nothing went wrong; a planted bug makes it exit 1 with violations.
func TestStress(t *testing.T) {
	code, stdout, stderr := kflex("stress", "--kills", "40", "--procs", "4", "--json")
	var rep map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep), "stdout %q, stderr %q", stdout, stderr)
	assertSnakeCase(t, stdout)
	for _, k := range []string{"kills", "cancellations", "recoveries", "violations", "stuck", "leaked",
		"recovery_p50_us", "recovery_p99_us", "acquisitions", "duration_s"} {
		assert.Contains(t, rep, k)
	}
	assert.EqualValues(t, 40, rep["kills"])
	assert.EqualValues(t, 0, rep["violations"])
	assert.EqualValues(t, 0, rep["stuck"])
	assert.EqualValues(t, 0, rep["leaked_objects"])
	if rep["dead_nodes_left"] == 0.0 && rep["attach_left"] == 0.0 {
		assert.Equal(t, 0, code, "stderr %q", stderr)
	} else {
		// The mcs bugs of stress.TestReapAbandonedPair and TestKilledInAttach:
		// a leak, exit 1.
		t.Logf("known mcs bugs: %v", rep["problems"])
		assert.Equal(t, 1, code)
	}

	code, stdout, stderr = kflex("stress", "--kills", "20", "--plant", "nolock", "--seed", "7")
	assert.Equal(t, 1, code)
	assert.Contains(t, stdout, "seed 7")
	assert.Contains(t, stderr, "violations")
	assert.NotContains(t, stdout, "  ok")

	code, _, stderr = kflex("stress-worker")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "started by kflex stress only")
}
