package heap

// Size classes for small objects: every size up to MaxSmall rounds up to one of
// these. The spacing (powers of two with one step between) bounds internal waste
// at 25% beyond 32 bytes, as in jemalloc's small classes.
var classSizes = [numClasses]uint64{
	8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
}

const (
	numClasses = 17
	// MaxSmall is the largest size served from size classes; larger requests
	// are whole page runs.
	MaxSmall = 4096
	// slabPages is the length of a slab: the page run carved into objects of one
	// class.
	slabPages = 16
	slabBytes = slabPages * PageSize
)

// classIndex[(size+7)/8] is the class of size; a table, because this runs on
// every allocation.
var classIndex = func() (t [MaxSmall/8 + 1]uint8) {
	c := 0
	for i := range t {
		for uint64(i)*8 > classSizes[c] {
			c++
		}
		t[i] = uint8(c)
	}
	return t
}()

func classOf(size uint64) int { return int(classIndex[(size+7)>>3]) }

// objectsPerSlab is how many objects of class c one slab holds.
func objectsPerSlab(c int) uint64 { return slabBytes / classSizes[c] }
