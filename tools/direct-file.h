/*
 * direct-file.h - opening a file for O_DIRECT, for the tools (kaio-cp,
 * kaio-bench, bench/raw-aio); callers word their own messages.
 */
#ifndef KAIO_TOOLS_DIRECT_FILE_H
#define KAIO_TOOLS_DIRECT_FILE_H

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

/* open(2) with O_DIRECT | O_CLOEXEC (mode 0666 when it creates); -1 and
 * errno on failure, EISDIR for a directory (ext4 answers EINVAL for
 * O_DIRECT there). */
static inline int tool_open_direct(const char *path, int flags)
{
	int fd = open(path, flags | O_DIRECT | O_CLOEXEC, 0666);
	struct stat st;

	if (fd < 0 && errno == EINVAL && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		errno = EISDIR;
	return fd;
}

#endif
