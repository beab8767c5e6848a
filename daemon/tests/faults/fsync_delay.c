/* Test-only shim for the fault test's slow-disk nemesis: LD_PRELOADed into
 * a daemon, it delays every fsync and fdatasync by the number of
 * milliseconds written in the file named by BLIXARD_TEST_FSYNC_DELAY_FILE
 * (0 or no file: no delay). Compiled by the test with the system cc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void delay(void) {
    const char *path = getenv("BLIXARD_TEST_FSYNC_DELAY_FILE");
    if (path == NULL) {
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return;
    }
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) {
        return;
    }
    buf[n] = 0;
    long ms = strtol(buf, NULL, 10);
    if (ms > 0) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    }
    delay();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    delay();
    return real(fd);
}
