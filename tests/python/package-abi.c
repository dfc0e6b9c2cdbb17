/* SPDX-License-Identifier: MIT */
/*
 * The layout of the public structures and the constants python/kdlens/_lib.py
 * mirrors with ctypes, as JSON on stdout: tests/python/test_package.py
 * compares it with the ctypes structures, so a header change that the
 * bindings miss fails there instead of corrupting memory.
 */
#include <stddef.h>
#include <stdio.h>

#include "metrics/base/error.h"
#include "metrics/base/tensor.h"
#include "metrics/cka.h"
#include "metrics/kl.h"

struct field {
        const char *name;
        size_t offset, size;
};

/* clang-format off */
#define F(T, f) {#f, offsetof(T, f), sizeof(((T *) 0)->f)}
/* clang-format on */

static const struct field tensor[] = {
        F(kdl_tensor, ndim), F(kdl_tensor, shape), F(kdl_tensor, stride),
        F(kdl_tensor, data), F(kdl_tensor, owner),
};
static const struct field cka_opts[] = {
        F(kdl_cka_opts, block_rows), F(kdl_cka_opts, pairs), F(kdl_cka_opts, bootstrap),
        F(kdl_cka_opts, seed),       F(kdl_cka_opts, level), F(kdl_cka_opts, precision),
        F(kdl_cka_opts, interval),   F(kdl_cka_opts, kinds), F(kdl_cka_opts, external),
};
static const struct field cka_matrix[] = {
        F(kdl_cka_matrix, nlayers),          F(kdl_cka_matrix, n),
        F(kdl_cka_matrix, biased),           F(kdl_cka_matrix, debiased),
        F(kdl_cka_matrix, minibatch),        F(kdl_cka_matrix, nbatches),
        F(kdl_cka_matrix, bootstrap),        F(kdl_cka_matrix, level),
        F(kdl_cka_matrix, interval),         F(kdl_cka_matrix, ngroups),
        F(kdl_cka_matrix, biased_lo),        F(kdl_cka_matrix, biased_hi),
        F(kdl_cka_matrix, biased_se),        F(kdl_cka_matrix, biased_bias),
        F(kdl_cka_matrix, debiased_lo),      F(kdl_cka_matrix, debiased_hi),
        F(kdl_cka_matrix, debiased_se),      F(kdl_cka_matrix, debiased_bias),
        F(kdl_cka_matrix, biased_rep),       F(kdl_cka_matrix, debiased_rep),
        F(kdl_cka_matrix, biased_jack),      F(kdl_cka_matrix, debiased_jack),
        F(kdl_cka_matrix, biased_sketch_se), F(kdl_cka_matrix, debiased_sketch_se),
};
static const struct field kl_opts[] = {
        F(kdl_kl_opts, c),         F(kdl_kl_opts, ntau),         F(kdl_kl_opts, tau),
        F(kdl_kl_opts, d_s),       F(kdl_kl_opts, d_t),          F(kdl_kl_opts, w_t),
        F(kdl_kl_opts, proj),      F(kdl_kl_opts, grad_feature), F(kdl_kl_opts, grad_logits),
        F(kdl_kl_opts, reservoir), F(kdl_kl_opts, seed),
};
static const struct field kl_block[] = {
        F(kdl_kl_block, row0), F(kdl_kl_block, samples), F(kdl_kl_block, zt),
        F(kdl_kl_block, zs),   F(kdl_kl_block, ht),      F(kdl_kl_block, hs),
        F(kdl_kl_block, gt),   F(kdl_kl_block, gzt),     F(kdl_kl_block, gzs),
};
static const struct field kl_fidelity[] = {
        F(kdl_kl_fidelity, available), F(kdl_kl_fidelity, dim),     F(kdl_kl_fidelity, mean),
        F(kdl_kl_fidelity, ratio),     F(kdl_kl_fidelity, pearson), F(kdl_kl_fidelity, spearman),
        F(kdl_kl_fidelity, relerr),
};
static const struct field kl_tau[] = {
        F(kdl_kl_tau, tau),
        F(kdl_kl_tau, v),
};
static const struct field kl_result[] = {
        F(kdl_kl_result, n),
        F(kdl_kl_result, c),
        F(kdl_kl_result, d_s),
        F(kdl_kl_result, d_t),
        F(kdl_kl_result, ntau),
        F(kdl_kl_result, tau),
        F(kdl_kl_result, spearman_n),
        F(kdl_kl_result, spearman_exact),
        F(kdl_kl_result, features),
        F(kdl_kl_result, projector_fitted),
        F(kdl_kl_result, projector_rank),
        F(kdl_kl_result, r2),
        F(kdl_kl_result, feature_sq),
        F(kdl_kl_result, head),
        F(kdl_kl_result, head_rank),
        F(kdl_kl_result, visible_share),
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void print_struct(const char *name, size_t size, const struct field *f, size_t n)
{
        printf("  \"%s\": {\"sizeof\": %zu, \"fields\": {", name, size);
        for (size_t i = 0; i < n; i++)
                printf("%s\"%s\": [%zu, %zu]", i ? ", " : "", f[i].name, f[i].offset, f[i].size);
        printf("}},\n");
}

int main(void)
{
        printf("{\n");
        print_struct("kdl_tensor", sizeof(kdl_tensor), tensor, COUNT(tensor));
        print_struct("kdl_cka_opts", sizeof(kdl_cka_opts), cka_opts, COUNT(cka_opts));
        print_struct("kdl_cka_matrix", sizeof(kdl_cka_matrix), cka_matrix, COUNT(cka_matrix));
        print_struct("kdl_kl_opts", sizeof(kdl_kl_opts), kl_opts, COUNT(kl_opts));
        print_struct("kdl_kl_block", sizeof(kdl_kl_block), kl_block, COUNT(kl_block));
        print_struct("kdl_kl_fidelity", sizeof(kdl_kl_fidelity), kl_fidelity, COUNT(kl_fidelity));
        print_struct("kdl_kl_tau", sizeof(kdl_kl_tau), kl_tau, COUNT(kl_tau));
        print_struct("kdl_kl_result", sizeof(kdl_kl_result), kl_result, COUNT(kl_result));
        printf("  \"constants\": {\"KDL_MAX_DIMS\": %d, \"KDL_KL_VALUE_COUNT\": %d, "
               "\"KDL_ESHAPE\": %d, \"KDL_ENONFINITE\": %d, \"KDL_EOVERFLOW\": %d, "
               "\"KDL_ERANGE\": %d, \"KDL_EMISMATCH\": %d, \"KDL_EMISSING\": %d, "
               "\"KDL_EUSAGE\": %d, \"KDL_CKA_LINEAR\": %d, \"KDL_CKA_RBF\": %d, "
               "\"KDL_CKA_PRECISION_DOUBLE\": %d, \"KDL_CKA_INTERVAL_PERCENTILE\": %d}\n}\n",
               KDL_MAX_DIMS, KDL_KL_VALUE_COUNT_, KDL_ESHAPE, KDL_ENONFINITE, KDL_EOVERFLOW,
               KDL_ERANGE, KDL_EMISMATCH, KDL_EMISSING, KDL_EUSAGE, KDL_CKA_LINEAR, KDL_CKA_RBF,
               KDL_CKA_PRECISION_DOUBLE, KDL_CKA_INTERVAL_PERCENTILE);
        return 0;
}
