//go:build !kflexfault

package abi

// faultHelper: builds without the kflexfault tag do not offer HelperFault.
const faultHelper = false
