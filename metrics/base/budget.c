/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "metrics/base/alloc.h"
#include "metrics/base/budget.h"
#include "metrics/base/banned.h"

size_t kdl_sat_add(size_t a, size_t b)
{
        return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

size_t kdl_sat_mul(size_t a, size_t b)
{
        return b && a > SIZE_MAX / b ? SIZE_MAX : a * b;
}

/* The number in file @path (a cgroup limit); 0 when absent, "max" or not a number. */
static size_t read_limit(const char *path)
{
        FILE *f = path ? fopen(path, "r") : NULL;
        unsigned long long v = 0;

        if (!f)
                return 0;
        if (fscanf(f, "%llu", &v) != 1)
                v = 0;
        fclose(f);
        return v > SIZE_MAX ? SIZE_MAX : (size_t) v;
}

/* The smaller of @a and the limit in @path when that is set (non-zero). */
static size_t min_limit(size_t a, char *path)
{
        size_t v = read_limit(path);

        free(path);
        return v && v < a ? v : a;
}

/*
 * The memory limit of this process's cgroup, or SIZE_MAX: v2's memory.max
 * and v1's memory.limit_in_bytes, at the path /proc/self/cgroup names and at
 * the root of the hierarchy (where a container's namespace puts its own).
 * An unlimited v1 group says 2^63 rounded to pages, larger than any memory.
 */
static size_t cgroup_limit(void)
{
        FILE *f = fopen("/proc/self/cgroup", "r");
        size_t lim = SIZE_MAX, cap = 0;
        char *line = NULL, *p;

        lim = min_limit(lim, kdl__strdup("/sys/fs/cgroup/memory.max"));
        lim = min_limit(lim, kdl__strdup("/sys/fs/cgroup/memory/memory.limit_in_bytes"));
        while (f && getline(&line, &cap, f) > 0) {
                line[strcspn(line, "\n")] = '\0';
                p = strchr(line, ':');
                if (!p || !strchr(p + 1, ':'))
                        continue;
                if (strncmp(line, "0::", 3) == 0)
                        lim = min_limit(lim, kdl__asprintf("/sys/fs/cgroup%s/memory.max", p + 2));
                else if (strncmp(p, ":memory:", 8) == 0)
                        lim = min_limit(lim, kdl__asprintf("/sys/fs/cgroup/memory%s/"
                                                           "memory.limit_in_bytes",
                                                           p + 8));
        }
        free(line);
        if (f)
                fclose(f);
        return lim;
}

size_t kdl_memory_physical(void)
{
        long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
        size_t phys, lim = cgroup_limit();

        phys = pages > 0 && size > 0 ? kdl_sat_mul((size_t) pages, (size_t) size) : 0;
        if (!phys)
                return lim == SIZE_MAX ? 0 : lim;
        return lim < phys ? lim : phys;
}

size_t kdl_memory_default(void)
{
        size_t phys = kdl_memory_physical();

        return phys ? phys / 2 : (size_t) 4 << 30;
}

static int bad_memory(const char *s)
{
        return kdl_error(-KDL_EUSAGE,
                         "--memory: expected a size such as 512M, 4G, 1.5G or 50%%, found '%s'", s);
}

/* The multiplier of unit @u ("G", "GiB", "GB", any case; "" for bytes), 0 for none known. */
static double unit_scale(const char *u)
{
        static const char units[] = "KMGT";
        const char *k = *u ? strchr(units, toupper((unsigned char) *u)) : NULL;

        if (!*u)
                return 1.0;
        if (!k || !*k)
                return 0.0;
        if (u[1] && strcasecmp(u + 1, "ib") != 0 && strcasecmp(u + 1, "b") != 0)
                return 0.0;
        return ldexp(1.0, 10 * (int) (k - units + 1));
}

int kdl_memory_parse(const char *s, size_t physical, size_t *ret)
{
        double v, scale, bytes;
        char *end;

        if (!s || !(isdigit((unsigned char) s[0]) || s[0] == '.'))
                return bad_memory(s ? s : "");
        errno = 0;
        v = strtod(s, &end);
        /* Plain decimals only: no exponent, no hexadecimal. */
        if (end == s || errno || (size_t) (end - s) != strspn(s, "0123456789.") || !(v > 0.0))
                return bad_memory(s);
        if (strcmp(end, "%") == 0) {
                if (!(v <= 100.0) || !physical)
                        return kdl_error(-KDL_EUSAGE,
                                         physical ? "--memory: expected a percentage of physical "
                                                    "memory in (0, 100], found '%s'"
                                                  : "--memory: '%s': this system does not say "
                                                    "how much physical memory it has",
                                         s);
                bytes = floor(v / 100.0 * (double) physical);
        } else {
                scale = unit_scale(end);
                if (!(scale > 0.0) || (!*end && floor(v) < v))
                        return bad_memory(s);
                bytes = floor(v * scale);
        }
        /* (double) SIZE_MAX rounds up to 2^64: every size below it fits. */
        if (!(bytes >= 1.0) || !(bytes < (double) SIZE_MAX))
                return bad_memory(s);
        *ret = (size_t) bytes;
        return 0;
}

const char *kdl_memory_format(size_t bytes, char buf[static KDL_MEMORY_FMT])
{
        static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
        double v = (double) bytes;
        long long tenths;
        int u = 0;

        if (bytes == KDL_MEMORY_UNLIMITED) {
                snprintf(buf, KDL_MEMORY_FMT, "unlimited");
                return buf;
        }
        while (v >= 1024.0 && u < 6) {
                v /= 1024.0;
                u++;
        }
        tenths = llround(v * 10.0);
        if (u == 0 || tenths % 10 == 0)
                snprintf(buf, KDL_MEMORY_FMT, "%lld %s", tenths / 10, unit[u]);
        else
                snprintf(buf, KDL_MEMORY_FMT, "%.1f %s", (double) tenths / 10.0, unit[u]);
        return buf;
}

int kdl_budget_check(size_t need, size_t budget, const char *analysis, const char *lower,
                     const char *what, ...)
{
        char a[KDL_MEMORY_FMT], b[KDL_MEMORY_FMT];
        va_list ap;
        char *w;
        int err;

        if (need <= budget)
                return 0;
        va_start(ap, what);
        w = kdl__vasprintf(what, ap);
        va_end(ap);
        err = kdl_error(-KDL_EBUDGET, "%s needs %s for %s (--memory is %s): %s%s%s", analysis,
                        kdl_memory_format(need, a), w ? w : "its data",
                        kdl_memory_format(budget, b), lower ? "lower it with " : "",
                        lower ? lower : "", lower ? ", or raise --memory" : "raise --memory");
        free(w);
        return err;
}
