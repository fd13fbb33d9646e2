package mcs

// pause executes the PAUSE instruction n times (n > 0): a spin-wait hint that
// saves power and yields the core's resources to a hyperthread sibling.
func pause(n uint32)
