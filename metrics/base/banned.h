/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_BASE_BANNED_H
#define KDL_METRICS_BASE_BANNED_H

/* Functions git bans for being easy to misuse (STYLE.md 3.8 #11).  Included
 * last by kdlens sources so that a use becomes a compile error. */
#define BANNED(func) sorry_##func##_is_a_banned_function

#undef strcpy
#define strcpy(x, y) BANNED(strcpy)
#undef strcat
#define strcat(x, y) BANNED(strcat)
#undef strncpy
#define strncpy(x, y, n) BANNED(strncpy)
#undef sprintf
#define sprintf(...) BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) BANNED(vsprintf)
#undef strtok
#define strtok(x, y) BANNED(strtok)
#undef gets
#define gets(x) BANNED(gets)

#endif
