/*
 * direct-file.h - opening a file for O_DIRECT, for the tools (kaio-cp,
 * kaio-bench, bench/raw-aio); callers word their own messages.
 */
#ifndef KAIO_TOOLS_DIRECT_FILE_H
#define KAIO_TOOLS_DIRECT_FILE_H

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* The tools' failure to open a file that exists but is neither a regular
 * file nor a block device (tool_open_direct's return). */
#define TOOL_OPEN_WRONG_KIND (-2)

/* "a directory", "a FIFO", ... for a message about a file of mode m. */
static inline const char *tool_file_kind(mode_t m)
{
	if (S_ISREG(m))
		return "a regular file";
	if (S_ISBLK(m))
		return "a block device";
	if (S_ISDIR(m))
		return "a directory";
	if (S_ISCHR(m))
		return "a character device";
	if (S_ISFIFO(m))
		return "a FIFO (pipe)";
	if (S_ISSOCK(m))
		return "a socket";
	return "not a regular file";
}

/*
 * open(2) with O_DIRECT | O_CLOEXEC (mode 0666 when it creates) of a
 * regular file or a block device: the descriptor, with *st its status; -1
 * and errno when open fails; TOOL_OPEN_WRONG_KIND, with *st the file's
 * status, for another kind of file (open(2) of a FIFO would wait for a
 * writer, for ever: it is opened non-blocking, looked at, and only then
 * made blocking; a directory or a character device fails O_DIRECT with
 * EINVAL, which stat(2) explains).
 */
static inline int tool_open_direct(const char *path, int flags, struct stat *st)
{
	int fd = open(path, flags | O_DIRECT | O_CLOEXEC | O_NONBLOCK, 0666);

	if (fd < 0) {
		int err = errno;

		if (stat(path, st) == 0 && !S_ISREG(st->st_mode) && !S_ISBLK(st->st_mode))
			return TOOL_OPEN_WRONG_KIND;
		errno = err;
		return -1;
	}
	if (fstat(fd, st) < 0)
		goto fail;
	if (!S_ISREG(st->st_mode) && !S_ISBLK(st->st_mode)) {
		close(fd);
		return TOOL_OPEN_WRONG_KIND;
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		goto fail;
	return fd;

fail:;
	int err = errno;
	close(fd);
	errno = err;
	return -1;
}

#endif
