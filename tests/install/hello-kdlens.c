/* SPDX-License-Identifier: MIT */
/* A program built against an installed kdlens with `pkg-config --cflags --libs kdlens`
 * (tests/install/test_install.py): linear CKA of two layers of one feature each. */
#include <stdio.h>

#include "metrics/cka.h"

int main(void)
{
        double x[8] = {1, 2, 3, 4, 5, 6, 7, 9}, y[8] = {2, 1, 4, 3, 6, 5, 9, 7};
        kdl_tensor t[2] = {kdl_tensor_wrap(x, 2, (size_t[]){8, 1}),
                           kdl_tensor_wrap(y, 2, (size_t[]){8, 1})};
        kdl_cka_state *s = NULL;
        kdl_cka_matrix *m = NULL;
        int err = kdl_cka_state_new(2, (size_t[]){1, 1}, NULL, &s);

        if (err == 0)
                err = kdl_cka_accumulate(s, t, NULL);
        if (err == 0)
                err = kdl_cka_finalize(s, &m);
        if (err == 0)
                printf("%.17g\n", m->biased[1]);
        else
                fprintf(stderr, "%s: %s\n", kdl_strerror(err), kdl_errmsg());
        kdl_cka_matrix_free(m);
        kdl_cka_state_free(s);
        return err != 0;
}
