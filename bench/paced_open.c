/* The paced producer of bench/sustained.py: open+close (or open+write+close)
 * of one file at RATE operations a second for SECONDS, in steps of 1 ms.
 * In C so that the producer, not the tracer, is never what limits the rate
 * (a Python loop topped out near 240k opens/s here). Prints the rate achieved.
 *
 *     paced_open PATH RATE SECONDS WRITE(0|1)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: paced_open PATH RATE SECONDS WRITE\n");
		return 2;
	}
	const char *path = argv[1];
	long rate = atol(argv[2]);
	double seconds = atof(argv[3]);
	int write_too = atoi(argv[4]);
	double tick = 0.001, t0 = now(), next = t0, end = t0 + seconds;
	long per_tick = rate / 1000 > 0 ? rate / 1000 : 1, done = 0;
	int flags = write_too ? O_WRONLY | O_CREAT : O_RDONLY;

	close(open(path, O_WRONLY | O_CREAT, 0600));
	while (now() < end) {
		for (long i = 0; i < per_tick; i++) {
			int fd = open(path, flags, 0600);

			if (fd < 0) {
				perror(path);
				return 1;
			}
			if (write_too && write(fd, "x", 1) != 1) {
				perror("write");
				return 1;
			}
			close(fd);
		}
		done += per_tick;
		next += tick;
		double d = next - now();
		if (d > 0) {
			struct timespec ts = { 0, (long)(d * 1e9) };
			nanosleep(&ts, 0);
		}
	}
	printf("%.0f\n", done / (now() - t0));
	return 0;
}
