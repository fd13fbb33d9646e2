package kernel

// RequireArena is requireArena for the external test package (kernel_test),
// whose harnesses import kernel.
var RequireArena = requireArena
