//go:build kflexfault

package abi

// faultHelper: builds with the kflexfault tag offer HelperFault.
const faultHelper = true
