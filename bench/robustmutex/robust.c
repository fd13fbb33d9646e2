// robust: the baseline kflex's MCS lock is measured against — glibc's robust,
// process-shared pthread mutex, the lock an application would otherwise put in
// shared memory. Built and run by `make bench`, beside the Go benchmarks.
//
//   robust uncontended N        ns per lock+unlock, one thread
//   robust procs P SECONDS      P processes on one lock: combined ops/s
//   robust threads T SECONDS    T threads of one process on one lock: ops/s
//   robust kill N [THREADS [MB]]
//                               N times: a child process holds the lock and is
//                               SIGKILLed while a thread of this process waits
//                               for it; p50 and p99 of SIGKILL -> EOWNERDEAD, µs.
//                               THREADS: idle threads the child starts first,
//                               MB: memory it touches first (a Go holder has
//                               several threads and an RSS of about 12 MB:
//                               its exit takes longer), default 0 and 0
//
// Every mode checks the protected counter for lost updates and exits 1 on any.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct shared {
	pthread_mutex_t mu;
	char pad[64];
	unsigned long counter;
	atomic_int stop;
	atomic_ulong ops;
	atomic_ulong per[256]; /* ops of each worker: the lock's fairness */
	atomic_int next;
};

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct shared *setup(void) {
	struct shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (s == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	memset(s, 0, sizeof *s);
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&s->mu, &a);
	return s;
}

static void lock(struct shared *s) {
	int r = pthread_mutex_lock(&s->mu);
	if (r == EOWNERDEAD)
		pthread_mutex_consistent(&s->mu);
	else if (r != 0) {
		fprintf(stderr, "lock: %s\n", strerror(r));
		exit(2);
	}
}

static unsigned long loop(struct shared *s) {
	unsigned long n = 0;
	while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
		lock(s);
		s->counter++;
		pthread_mutex_unlock(&s->mu);
		n++;
	}
	atomic_fetch_add(&s->ops, n);
	s->per[atomic_fetch_add(&s->next, 1)] = n;
	return n;
}

static void *thread_main(void *arg) {
	loop(arg);
	return NULL;
}

static int check(struct shared *s) {
	if (s->counter != s->ops) {
		fprintf(stderr, "lost updates: counter %lu, ops %lu\n", s->counter, (unsigned long)s->ops);
		return 1;
	}
	return 0;
}

/* The waiter of kill mode: it takes the lock the child holds and notes when. */
struct killwait {
	struct shared *s;
	double got;
	int r;
};

static void *kill_waiter(void *arg) {
	struct killwait *k = arg;
	k->r = pthread_mutex_lock(&k->s->mu);
	k->got = now();
	if (k->r == EOWNERDEAD)
		pthread_mutex_consistent(&k->s->mu);
	if (k->r == 0 || k->r == EOWNERDEAD)
		pthread_mutex_unlock(&k->s->mu);
	return NULL;
}

static int cmpd(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void *idle_thread(void *arg) {
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static int kill_mode(long n, long threads, long mb) {
	struct shared *s = setup();
	double *lat = calloc(n, sizeof *lat);
	for (long i = 0; i < n; i++) {
		int p[2];
		char c;
		if (pipe(p) != 0) {
			perror("pipe");
			return 2;
		}
		pid_t pid = fork();
		if (pid == 0) {
			char *mem = malloc(mb << 20);
			for (long b = 0; mem && b < mb << 20; b += 4096)
				mem[b] = 1;
			for (long t = 0; t < threads; t++) {
				pthread_t idle;
				pthread_create(&idle, NULL, idle_thread, NULL);
			}
			lock(s);
			write(p[1], "h", 1);
			for (;;)
				pause();
		}
		if (pid < 0 || read(p[0], &c, 1) != 1) {
			perror("fork");
			return 2;
		}
		close(p[0]);
		close(p[1]);
		struct killwait k = {.s = s};
		pthread_t th;
		pthread_create(&th, NULL, kill_waiter, &k);
		usleep(2000); /* the waiter is asleep in the kernel by now */
		double t0 = now();
		kill(pid, SIGKILL);
		pthread_join(th, NULL);
		waitpid(pid, NULL, 0);
		if (k.r != EOWNERDEAD) {
			fprintf(stderr, "kill: lock returned %s, not EOWNERDEAD\n", strerror(k.r));
			return 1;
		}
		lat[i] = (k.got - t0) * 1e6;
	}
	qsort(lat, n, sizeof *lat, cmpd);
	printf("robust-pthread kill n=%ld threads=%ld mb=%ld p50_us=%.1f p99_us=%.1f\n", n, threads, mb, lat[n / 2], lat[n * 99 / 100]);
	return 0;
}

int main(int argc, char **argv) {
	if (argc >= 3 && argc <= 5 && strcmp(argv[1], "kill") == 0)
		return kill_mode(atol(argv[2]) > 0 ? atol(argv[2]) : 1, argc >= 4 ? atol(argv[3]) : 0, argc == 5 ? atol(argv[4]) : 0);
	if (argc == 3 && strcmp(argv[1], "uncontended") == 0) {
		struct shared *s = setup();
		long n = atol(argv[2]);
		double t0 = now();
		for (long i = 0; i < n; i++) {
			lock(s);
			s->counter++;
			pthread_mutex_unlock(&s->mu);
		}
		double dt = now() - t0;
		s->ops = n;
		printf("robust-pthread uncontended %.2f ns/op\n", dt / n * 1e9);
		return check(s);
	}
	if (argc == 4 && (strcmp(argv[1], "procs") == 0 || strcmp(argv[1], "threads") == 0)) {
		struct shared *s = setup();
		int n = atoi(argv[2]);
		double secs = atof(argv[3]);
		int procs = argv[1][0] == 'p';
		pthread_t th[256];
		if (n < 1 || n > 256) {
			fprintf(stderr, "count %d outside [1, 256]\n", n);
			return 2;
		}
		double t0 = now();
		for (int i = 0; i < n; i++) {
			if (procs) {
				pid_t pid = fork();
				if (pid == 0) {
					loop(s);
					_exit(0);
				}
				if (pid < 0) {
					perror("fork");
					return 2;
				}
			} else {
				pthread_create(&th[i], NULL, thread_main, s);
			}
		}
		usleep((useconds_t)(secs * 1e6));
		atomic_store(&s->stop, 1);
		for (int i = 0; i < n; i++) {
			if (procs)
				wait(NULL);
			else
				pthread_join(th[i], NULL);
		}
		double dt = now() - t0;
		unsigned long lo = s->per[0], hi = s->per[0];
		for (int i = 1; i < n; i++) {
			lo = s->per[i] < lo ? s->per[i] : lo;
			hi = s->per[i] > hi ? s->per[i] : hi;
		}
		printf("robust-pthread %s=%d %.0f ops/s (worker min/max share %.3f)\n", argv[1], n, s->ops / dt,
		       hi ? (double)lo / hi : 0);
		return check(s);
	}
	fprintf(stderr, "usage: robust uncontended N | procs P SECONDS | threads T SECONDS | kill N [THREADS [MB]]\n");
	return 2;
}
