/*
 * Runs a fuzz harness's LLVMFuzzerTestOneInput on files (or every file of
 * directories) without libFuzzer, so the committed corpus replays under
 * any compiler with sanitizers (gcc included).
 *
 * usage: replay PATH...
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static long g_runs;

static void run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        exit(2);
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = (uint8_t *)malloc(cap);
    size_t got;
    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = (uint8_t *)realloc(buf, cap);
        }
    }
    fclose(f);
    if (buf == NULL) {
        fprintf(stderr, "replay: out of memory\n");
        exit(2);
    }
    /* an exact-size copy, as libFuzzer passes it */
    uint8_t *exact = (uint8_t *)malloc(n > 0 ? n : 1);
    memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    ++g_runs;
}

static void run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: no such file %s\n", path);
        exit(2);
    }
    if (!S_ISDIR(st.st_mode)) {
        run_file(path);
        return;
    }
    DIR *dir = opendir(path);
    struct dirent *e;
    while (dir != NULL && (e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char child[4096];
        snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
        run_path(child);
    }
    if (dir != NULL) {
        closedir(dir);
    }
}

int main(int argc, char **argv)
{
    for (int k = 1; k < argc; ++k) {
        run_path(argv[k]);
    }
    printf("replayed %ld inputs\n", g_runs);
    return 0;
}
