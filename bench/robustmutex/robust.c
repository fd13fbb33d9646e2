// robust: the baseline kflex's MCS lock is measured against — glibc's robust,
// process-shared pthread mutex, the lock an application would otherwise put in
// shared memory. Built and run by `make bench`, beside the Go benchmarks.
//
//   robust uncontended N        ns per lock+unlock, one thread
//   robust procs P SECONDS      P processes on one lock: combined ops/s
//   robust threads T SECONDS    T threads of one process on one lock: ops/s
//
// Every mode checks the protected counter for lost updates and exits 1 on any.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
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

int main(int argc, char **argv) {
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
	fprintf(stderr, "usage: robust uncontended N | procs P SECONDS | threads T SECONDS\n");
	return 2;
}
