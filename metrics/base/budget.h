/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_BASE_BUDGET_H
#define KDL_METRICS_BASE_BUDGET_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics/base/error.h"

/*
 * The memory budget (--memory): how many bytes a command may allocate, and
 * the one-line refusal when an analysis would need more.  An analysis
 * states what it needs before it allocates it and asks kdl_budget_check();
 * a need over the budget is an error (-KDL_EBUDGET), never an allocation
 * the kernel kills the process for.
 */

/* A budget that refuses nothing. */
#define KDL_MEMORY_UNLIMITED SIZE_MAX

/* Room kdl_memory_format() needs, with the terminating NUL. */
#define KDL_MEMORY_FMT 24

/**
 * kdl_memory_physical() - the memory this process may use: the physical
 * memory (sysconf(_SC_PHYS_PAGES) pages, /proc/meminfo's MemTotal), or the
 * memory limit of the process's cgroup when one is set and smaller (cgroup
 * v2 memory.max, v1 memory.limit_in_bytes).
 * Return: the bytes; 0 when the system does not say.
 */
KDL_API size_t kdl_memory_physical(void);

/**
 * kdl_memory_default() - the default budget: half of kdl_memory_physical()
 * (12 GiB on a 24 GiB machine), or 4 GiB when the system does not say.
 */
KDL_API size_t kdl_memory_default(void);

/**
 * kdl_memory_parse() - a budget as the user writes it.
 * @s:        a whole number of bytes ("500000000"); a number with a binary
 *            unit K, M, G or T, any case, optionally followed by "iB" or "B"
 *            ("512M", "1.5G", "4GiB": 2^10, 2^20, 2^30, 2^40 bytes, also for
 *            "GB"); or a percentage of @physical in (0, 100] ("50%").
 * @physical: kdl_memory_physical(), for percentages.
 * @ret:      set on success only.
 * Return: 0; -KDL_EUSAGE (message recorded, naming --memory) for anything
 * else: empty, negative, zero, a fraction of a byte, an unknown unit, a
 * percentage out of range or without a known physical memory, or a size
 * that does not fit size_t.
 */
KDL_API int kdl_memory_parse(const char *s, size_t physical, size_t *ret);

/**
 * kdl_memory_format() - @bytes for people: "512 B", "64 KiB", "1.5 MiB",
 * "37.2 GiB" (one decimal, none when it is 0), "unlimited" for
 * KDL_MEMORY_UNLIMITED.
 * Return: @buf.
 */
KDL_API const char *kdl_memory_format(size_t bytes, char buf[static KDL_MEMORY_FMT]);

/**
 * kdl_budget_check() - 0 when @need fits @budget; otherwise the refusal.
 * @analysis: the analysis asking ("cka").
 * @lower:    the options that lower the need, as the user types them
 *            ("--subsample or --spatial avg"); NULL when none does.
 * @what:     printf format of what the memory is for ("the feature-space
 *            state of %zu layers"); the arguments follow.
 *
 * The message, one line: "cka needs 37.2 GiB for the feature-space state of
 * 24 layers (--memory is 12 GiB): lower it with --subsample or --spatial avg,
 * or raise --memory"; without @lower, "...: raise --memory".
 * Return: 0; -KDL_EBUDGET with that message recorded.
 */
KDL_API int kdl_budget_check(size_t need, size_t budget, const char *analysis, const char *lower,
                             const char *what, ...) KDL_PRINTF(5, 6);

/* Arithmetic of needs, which saturate at SIZE_MAX rather than wrap (a need
 * that overflows is refused by any budget but KDL_MEMORY_UNLIMITED). */

/** kdl_sat_add() - @a + @b, or SIZE_MAX when the sum overflows. */
KDL_API size_t kdl_sat_add(size_t a, size_t b);

/** kdl_sat_mul() - @a * @b, or SIZE_MAX when the product overflows. */
KDL_API size_t kdl_sat_mul(size_t a, size_t b);

#endif
