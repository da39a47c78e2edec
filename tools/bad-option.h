/*
 * bad-option.h - why getopt_long refused an argument, in words, for the
 * tools (kaio-cp, kaio-bench, bench/raw-aio).  getopt_long answers '?' for
 * an unknown option, an ambiguous abbreviation and a value given to an
 * option that takes none alike; this tells them apart.
 */
#ifndef KAIO_TOOLS_BAD_OPTION_H
#define KAIO_TOOLS_BAD_OPTION_H

#include <getopt.h>
#include <stdio.h>
#include <string.h>

/*
 * Writes into buf (size n) why arg, the argument getopt_long refused with
 * '?', is wrong: "'--no' is ambiguous (--no-progress, --no-lat)", "option
 * '--fsync' takes no value", or "unknown option '--x'".
 */
static inline void tool_bad_option(const struct option *opts, const char *arg,
                                   char *buf, size_t n)
{
	if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
		snprintf(buf, n, "unknown option '%s'", arg);
		return;
	}
	const char *name = arg + 2;
	const char *eq = strchr(name, '=');
	size_t len = eq ? (size_t)(eq - name) : strlen(name);
	const struct option *exact = NULL, *first = NULL;
	unsigned matches = 0;
	size_t used = 0;
	char list[256] = "";

	for (const struct option *o = opts; o->name; o++) {
		if (strncmp(o->name, name, len) != 0)
			continue;
		if (strlen(o->name) == len) {
			exact = o;
			break;
		}
		if (matches++ == 0)
			first = o;
		if (used < sizeof list) {
			int w = snprintf(list + used, sizeof list - used, "%s--%s",
			                 matches > 1 ? ", " : "", o->name);
			if (w > 0)
				used += (size_t)w;
		}
	}
	if (!exact && matches == 1)
		exact = first; /* the one option it abbreviates: refused for its value */
	if (exact && eq && exact->has_arg == no_argument)
		snprintf(buf, n, "option '--%s' takes no value ('%s')", exact->name, arg);
	else if (!exact && matches > 1)
		snprintf(buf, n, "'%.*s' is ambiguous (%s)", (int)(len + 2), arg, list);
	else
		snprintf(buf, n, "unknown option '%s'", arg);
}

#endif
