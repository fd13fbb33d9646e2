# One of each instruction form, for TestKernelTextMatchesLinux: the last
# instruction reads an unset register, so Linux rejects the program and logs
# every instruction before it on the path it took first (which jumps over the
# instruction after the may_goto).
	mov %r0, 0
	mov32 %r1, -5
	mov %r2, %r1
	mov32 %r3, %r2
	add %r2, 7
	sub32 %r3, %r2
	mul %r2, -3
	div %r2, 3
	sdiv %r2, 3
	mod32 %r3, 5
	smod %r2, %r3
	or %r2, 0x10
	and32 %r3, 0xff
	lsh %r2, 3
	rsh32 %r3, %r2
	arsh %r2, 2
	xor %r2, %r3
	neg %r2
	neg32 %r3
	movsx864 %r4, %r2
	movsx1632 %r4, %r3
	movsx3264 %r4, %r2
	be16 %r4
	le32 %r4
	swap64 %r4
	lddw %r5, 0x1122334455667788
	stxdw [%r10-8], %r5
	stw [%r10-16], 7
	stxb [%r10-1], %r2
	ldxw %r6, [%r10-16]
	ldxhsx %r6, [%r10-16]
	ldxb %r7, [%r10-8]
	stdw [%r10-24], 0
	lock add [%r10-24], %r2
	lock fetch add [%r10-24], %r2
	lock or32 [%r10-16], %r3
	lock fetch xor32 [%r10-16], %r3
	lock xchg [%r10-24], %r2
	lock cmpxchg [%r10-24], %r2
	jeq %r2, 5, +0
	jne32 %r3, %r2, +0
	jsgt %r2, -1, +0
	jset %r2, 8, +0
	jslt32 %r3, 4, +0
	ja +0
	jgt %r2, %r3, +0
	jle32 %r3, 7, +0
	ja32 +0
	may_goto +1
	mov %r0, 0 # skipped: the verifier takes the may_goto first, and Linux 6.12 refuses may_goto +0
	lock xchg32 [%r10-16], %r3
	lock cmpxchg32 [%r10-16], %r3
	lock and [%r10-24], %r2
	stb [%r10-2], -1
	ldxdw %r8, [%r10-24]
	be64 %r8
	le16 %r8
	div32 %r3, %r8
	sdiv32 %r3, 7
	mod %r2, %r8
	smod32 %r3, -3
	call 5
	mov %r0, %r9
	exit
