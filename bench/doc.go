// Package bench holds kflex's measurement harnesses: the code behind
// `kflex bench` and the benchmarks that compare kflex's executors and lock with
// the kernel's, kept out of the packages they measure so that the oracle
// (kernel) and the runtime (serve) do not import each other or the JIT to time
// it.
//
// Layer 8 (harnesses over the whole runtime: bench, stress, examples,
// internal/layers): it may use every layer below, the program harnesses of
// layer 7 (internal/benchprog) included; only the commands import it.
//
// MeasureLock times the lock between Go and an extension and a client's
// invocation over the socket (`kflex bench lock`); MeasureLockUnlock times the
// lock's kernel form in the kernel and in kflex's JIT on one arena; LoadCorpus
// loads benchprog's programs into the kernel for the executor comparison
// (`kflex bench jit`, BenchmarkExecutorsVsKernel). The C baseline,
// glibc's robust mutex, is in robustmutex/.
package bench
