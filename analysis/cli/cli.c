/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "kdl-config.h"
#include "analysis/cli/cli.h"
#include "analysis/cli/cli-internal.h"
#include "analysis/inputs.h"
#include "metrics/base/budget.h"
#include "metrics/base/banned.h"

/* The help of --memory and --plan, for the verbs that take them. */
#define HELP_MEMORY(pad)                                                                           \
        "  --memory LIMIT     " pad "the most memory the analyses may use: 512M, 4G, 1.5G\n"       \
        "                     " pad "(binary units) or 50% of physical memory (default: half\n"    \
        "                     " pad "of it; an analysis that needs more stops, exit status 1)\n"
#define HELP_PLAN(pad)                                                                             \
        "  --plan             " pad "print the memory each analysis needs and whether it\n"        \
        "                     " pad "fits --memory, without reading any data\n"

/* The explicit, greppable command table (git). */
static const struct kdl_cmd commands[] = {
        {"inspect", cmd_inspect, 1, INT32_MAX, "list the checkpoints, layers and sources of dumps",
         "kdlens inspect FILE... [--quick] [--memory LIMIT] [--format table|md|csv|tex|json]",
         "  --quick            check the structure only; skip the NaN/Inf scan of every value\n"
         "  --format FMT       table (default), md, csv, tex or json\n"
         "  --join strict|inner  join students on /sample_ids as the analyses do (strict)\n"
         "  --memory LIMIT     the most memory the value scan may use: 512M, 4G, 1.5G or 50%\n"
         "                     of physical memory (default: half of it)\n"
         "Each student is paired with the teacher and their /labels compared row by row.\n"
         "Exit status 1 when any file has a schema problem or a pair's labels differ (each\n"
         "printed on stderr).\n",
         CMD_MEMORY},
        {"kl", cmd_kl, 0, 0, "how well each knowledge source approximates the KD criterion",
         "kdlens kl -t TEACHER.h5 -s STUDENT.h5... [-T 1,2,4,8] [--checkpoint NAME|all] "
         "[--topk 1,8,32,128] [--per-sample OUT.h5] [--memory LIMIT] [--plan] [--format "
         "table|md|csv|tex|json]",
         "  -t, --teacher FILE        the teacher's dump\n"
         "  -s, --student FILE        a student's dump (repeatable)\n"
         "  -T, --temperature LIST    temperatures, e.g. 1,2,4,8 (default 4)\n"
         "  -c, --checkpoint NAME     a student checkpoint, or 'all' (default: the last)\n"
         "  --teacher-checkpoint NAME the teacher checkpoint every student checkpoint is\n"
         "                            compared with (default: the teacher's last; 'same':\n"
         "                            the one of the same name)\n"
         "  -f, --format FMT          table (default), md, csv, tex or json\n"
         "  --per-sample OUT.h5       also write every per-sample value to OUT.h5\n"
         "  --spatial RULE            avg (default), max or flatten for rank-3/4 features\n"
         "  --nonfinite error|skip    fail on NaN/Inf (default) or drop those samples\n"
         "  --block-rows N            rows per block (default: from a 64 MiB budget, less\n"
         "                            under a --memory below 1 GiB)\n"
         "  --spearman-samples N      Spearman on at most N samples (default 65536)\n"
         "  --seed N                  seed of the Spearman subsample and of the sampled\n"
         "                            top-k draws (default 1)\n"
         "  --topk LIST               also sparse teacher targets for each k of LIST, e.g.\n"
         "                            1,8,32,128: table kl_topk (topk_renorm, topk_tail,\n"
         "                            sampled, hard; see docs/lm.md); a teacher with only\n"
         "                            sparse logits gives table kl_sparse instead\n"
         "  --join strict|inner       with /sample_ids in both dumps: the same ids in both\n"
         "                            (strict, default) or only the ids both hold (inner)\n"
         "  --ignore-roles            accept a -t dump whose role is student or a -s dump\n"
         "                            whose role is teacher (exit 2 otherwise); said in a "
         "note\n" HELP_MEMORY("       ") HELP_PLAN(
                 "       ") "\nOne row per student, checkpoint, temperature and value: the exact\n"
                            "tau^2 KL(p_t || p_s) ('kl') and each approximation of docs/kl.md, "
                            "with\n"
                            "mean, ratio to the exact mean, Pearson and Spearman correlation with "
                            "the\n"
                            "per-sample KL, relative error and the numbers per sample the source "
                            "needs.\n"
                            "A source whose data are missing is listed as unavailable with what it "
                            "needs.\n",
         CMD_MEMORY | CMD_PLAN},
        {"cka", cmd_cka, 1, 2, "centred kernel alignment between the layers of one or two dumps",
         "kdlens cka A.h5 [B.h5] [--kernel linear|rbf] [--estimator biased|debiased|minibatch] "
         "[--checkpoint NAME|all] [--bootstrap B] [--interval percentile|basic|bca] "
         "[--precision double|mixed] [--wide sketch|exact] [--wide-max D] [--wide-rank R] "
         "[--measure M] [--svcca-keep P] [--memory LIMIT] [--plan] "
         "[--format table|md|csv|tex|json]",
         "  --kernel K         linear (default) or rbf (sigma^2 = theta^2 x median squared "
         "distance)\n"
         "  --estimator E      biased (default), debiased or minibatch: the matrix shown\n"
         "  -c, --checkpoint C a checkpoint of A (B's of the same name, else its last), or all\n"
         "  --bootstrap B      B Poisson bootstrap replicates: 95 % intervals, sd and bias\n"
         "                     of linear CKA (feature or Gram space); use B >= 1000\n"
         "  --interval I       percentile (default), basic or bca (bias-corrected and\n"
         "                     accelerated)\n"
         "  --subsample N      seeded subsample for RBF, minibatch and the robust column "
         "(2048)\n  --sequences S      draw it by A's /sequence_ids: S whole (every token of the\n"
         "                     sequences drawn) or K (K tokens of each)\n"
         "  --batch M          minibatch size (256; with --estimator minibatch)\n"
         "  --theta T          RBF bandwidth as a fraction of the median distance (0.5;\n"
         "                     with --kernel rbf)\n"
         "  --seed S           seed of subsamples, bootstrap and batch order (0)\n"
         "  --precision P      double (default) or mixed: float products, double sums,\n"
         "                     linear CKA within 1e-6 of double\n"
         "  --wide-max D       a layer is wide when its width and the sample count both\n"
         "                     exceed D (4096; 0: none is): wide labels are kept as class\n"
         "                     sums (exact), other wide layers as --wide says\n"
         "  --wide W           sketch (default): a seeded Gaussian sketch of each wide\n"
         "                     layer, one pass, an estimate with its standard error\n"
         "                     (method sketch); exact: their products in column strips\n"
         "                     within half of --memory, more passes (method strips)\n"
         "  --wide-rank R      columns of each sketch (1024, at most --wide-max)\n"
         "  --measure M        comma-separated cka (default), cca, svcca, pwcca,\n"
         "                     procrustes, or all: each adds its columns to cka_pairs\n"
         "                     and a matrix table (NaN with a wide layer, and PWCCA\n"
         "                     in Gram space)\n"
         "  --svcca-keep P     share of each layer's variance SVCCA keeps (0.99)\n"
         "  --spatial R        avg (default), max or flatten for rank-3/4 features\n"
         "  --nonfinite M      error (default) or skip samples with NaN/Inf\n"
         "  -f, --format FMT   table (default), md, csv, tex or json\n"
         "  --join J           strict (default) or inner: with /sample_ids in both dumps,\n"
         "                     the same ids in both, or only the ids both hold\n" HELP_MEMORY("")
                 HELP_PLAN("") "Without B, A is compared with itself.  The logits count as a "
                               "layer; every layer is\n"
                               "also compared with A's logits and the one-hot labels (table "
                               "cka_targets).\nWith B, table cka_mapping: each layer of B's best "
                               "layer of A, and the monotone map.\n",
         CMD_MEMORY | CMD_PLAN},
        {"layers", cmd_layers, 0, 0, "rank teacher layers by knowledge quality before training",
         "kdlens layers -t T.h5 [-s S.h5] [-k K] [--subsample 5000] [--sequences whole|K] "
         "[--classes auto|all|K] "
         "[--variant code|pairs|per-class] [--checkpoint NAME|all] [--memory LIMIT] [--plan] "
         "[--format table|md|csv|tex|json]",
         "  -t, --teacher T    the teacher dump (required)\n"
         "  -s, --student S    a student dump: adds teacher x student CKA\n"
         "  -k, --top K        layers to recommend, listed in depth order (default\n"
         "                     min(4, ceil(n/2)) of the teacher's n feature layers)\n"
         "  --subsample N      class-balanced subsample for S, E, NCM, NC1 (N/C per class; "
         "5000)\n"
         "  --sequences S      draw it by T's /sequence_ids: S whole or K tokens of each\n"
         "                     (then the kept classes' tokens of it; exit 2 without)\n"
         "  --per-class M      samples per class for the class spectra of I (500, at most N/C)\n"
         "  --classes R        auto (default): every class when --subsample leaves 2 per\n"
         "                     class, else a subset; all; or a subset of at most K classes\n"
         "  --min-per-class M  a subset keeps classes with M samples or more; giving M\n"
         "                     asks for a subset (auto: the most, up to 50, that keep 10\n"
         "                     classes)\n"
         "  --class-rule R     which eligible classes a subset keeps: frequent (default,\n"
         "                     the most samples) or seeded (by class id and --seed)\n"
         "  --variant V        code (default: the authors' code, whole-block within-class\n"
         "                     mean, ln 5 and the summed 95 % count), pairs (the same over\n"
         "                     the strict pairs a < b) or per-class (strict pairs, each\n"
         "                     class's own count k_c, ln k_c)\n"
         "  --seed S           seed of the subsamples (0)\n"
         "  -c, --checkpoint C a teacher checkpoint, or all\n"
         "  --spatial R        avg (default), max or flatten for rank-3/4 features\n"
         "  --nonfinite M      error (default) or skip samples with NaN/Inf\n"
         "  -f, --format FMT   table (default), md, csv, tex or json\n"
         "  --join J           strict (default) or inner: with /sample_ids in both dumps,\n"
         "                     the same ids in both, or only the ids both hold\n"
         "  --ignore-roles     accept a -t dump whose role is student or a -s dump\n"
         "                     whose role is teacher (exit 2 otherwise); said in a "
         "note\n" HELP_MEMORY("") HELP_PLAN(""),
         CMD_MEMORY | CMD_PLAN},
        {"dims", cmd_dims, 0, 0, "does the student have enough feature dimensions?",
         "kdlens dims [-t TEACHER.h5] [-s STUDENT.h5]... [--layer NAME|all] [--tolerance 0.01] "
         "[--checkpoint NAME|all] [--memory LIMIT] [--plan] [--format table|md|csv|tex|json]",
         "  -t, --teacher FILE      the teacher's dump: residual curve, ridge targets, verdicts\n"
         "  -s, --student FILE      a student's dump; repeat for several\n"
         "  -c, --checkpoint NAME   a checkpoint, or all (default: the last)\n"
         "      --teacher-checkpoint NAME  the teacher's checkpoint each student checkpoint\n"
         "                          is judged against (default: its last; 'same')\n"
         "      --layer NAME        one feature layer, or all (default)\n"
         "      --tolerance F       share of the teacher's centred-logit variance a student\n"
         "                          may leave out (default 0.01): d_needed and R^2 >= 1 - F\n"
         "      --rank-rtol F       numerical rank counts eigenvalues above F x the largest\n"
         "                          (default 1e-06)\n"
         "      --lambda X|gcv      ridge penalty in sum-of-squares units, or gcv (default)\n"
         "  -T, --temperature T     temperature of the per-sample support of W^T F W (default 4)\n"
         "      --spatial RULE      avg (default), max or flatten for [N,C,H,W] and [N,T,D]\n"
         "      --nonfinite MODE    error (default), or skip samples with NaN/Inf\n"
         "      --curves            also print every eigenvalue in the terminal table (the other\n"
         "                          formats always have the spectrum table)\n"
         "      --logit-spectrum M  auto (default), exact-features (C x C), exact-gram (N x N)\n"
         "                          or sketch: how the centred logits' spectrum is computed;\n"
         "                          auto is exact up to --exact-max and 4 GiB, else sketch\n"
         "      --exact-max D       largest C (or N, Gram side) auto solves exactly (4096)\n"
         "      --sketch-rank R     eigenvalues the sketch bounds (256)\n"
         "      --sketch-oversample P  extra columns of its test matrix (16)\n"
         "      --seed S            seed of the sketch's test matrix (0)\n"
         "      --block-rows R      rows read per block (default: a 64 MiB budget)\n"
         "  -f, --format FMT        table (default), md, csv, tex or json\n"
         "      --join strict|inner with /sample_ids in both dumps: the same ids in both\n"
         "                          (strict, default) or only the ids both hold (inner)\n"
         "      --ignore-roles      accept a -t dump whose role is student or a -s dump\n"
         "                          whose role is teacher (exit 2 otherwise); said in a "
         "note\n" HELP_MEMORY("     ") HELP_PLAN(
                 "     ") "Tables: dims (one row per model, checkpoint and layer), heads, "
                          "verdict,\n"
                          "softmax_bottleneck (the width against the rank of the teacher's "
                          "centred\nlog-probabilities), logit_residual (the teacher's curve "
                          "over d = 1..C), spectrum.\n",
         CMD_MEMORY | CMD_PLAN},
        {"split", cmd_split, 0, 0,
         "explicit vs implicit knowledge (TCKD/NCKD, AEKT) and universe/domain/instance levels",
         "kdlens split -t TEACHER.h5 -s STUDENT.h5... [-T TAUS] [--checkpoint NAME|all] "
         "[--format table|md|csv|tex|json] [--per-sample OUT.h5] [--domain auto|full|blocked|off] "
         "[--top-pairs K] [--memory LIMIT] [--plan]",
         "  -t, --teacher FILE   the teacher dump (with /labels, or the student has them)\n"
         "  -s, --student FILE   a student dump (repeatable)\n"
         "  -T, --temperature L  temperatures, e.g. 1,4 (default 4); KL terms carry tau^2\n"
         "  -c, --checkpoint C   a student checkpoint, or all (default: the last)\n"
         "  --teacher-checkpoint C  the teacher's checkpoint to compare with (default: its\n"
         "                       last; 'same': the one of the same name)\n"
         "  -f, --format FMT     table (default), md, csv, tex or json; json and csv add the\n"
         "                       histograms and the C x C matrices as one record per cell\n"
         "  --per-sample FILE    write every per-sample value to an HDF5 file\n"
         "  --lambda L           KD weight for eps_n and w_n (default 0.9, mdistiller's)\n"
         "  --omega-max W        clip of the AEKT weight p^t_y/p^s_y (default 10)\n"
         "  --w-eps E            guard of the w_n denominator (default 1e-3)\n"
         "  --bins B             output bins of the [0,1] histograms, divides 1000 (default 20;\n"
         "                       json and csv only)\n"
         "  --block-rows R       rows read per block (default: a 64 MiB budget)\n"
         "  --nonfinite error|skip  fail on NaN/Inf (default), or drop those samples\n"
         "  --join strict|inner  with /sample_ids in both dumps: the same ids in both\n"
         "                       (strict, default) or only the ids both hold (inner)\n"
         "  --ignore-roles       accept a -t dump whose role is student or a -s dump\n"
         "                       whose role is teacher (exit 2 otherwise); said in a note\n"
         "  --domain MODE        the domain level: auto (default: the C x C matrices up to\n"
         "                       --domain-max-c classes and within --memory, blocks of\n"
         "                       classes beyond), full, blocked or off\n"
         "  --domain-max-c N     auto's largest C for the C x C matrices (4096)\n"
         "  --top-pairs K        most confused class pairs listed in blocked mode "
         "(100)\n" HELP_MEMORY("")
                 HELP_PLAN("") "A token dump with /positions adds table "
                               "split_positions: the means\nper position (0 to 8191).\n",
         CMD_MEMORY | CMD_PLAN},
        {"summary", cmd_summary, 0, 0,
         "accuracy, fidelity to the teacher, calibration (ECE), NLL and KL per checkpoint",
         "kdlens summary -t TEACHER.h5 -s STUDENT.h5... [--checkpoint NAME|all] [-T TAU] "
         "[--bins 15] [--group NAME=FILE,FILE,...] [--memory LIMIT] [--plan] [--format "
         "table|md|csv|tex|json]",
         "  -t, --teacher FILE        the teacher's dump\n"
         "  -s, --student FILE        a student's dump (repeatable)\n"
         "  -c, --checkpoint NAME     a student checkpoint, or 'all' (default: the last)\n"
         "  --teacher-checkpoint NAME the teacher checkpoint every student checkpoint is\n"
         "                            compared with (default: the teacher's last; 'same':\n"
         "                            the one of the same name)\n"
         "  -T, --temperature TAU     the one temperature of the KL (default 4)\n"
         "  --bins B                  equal-width confidence bins of ECE and classwise ECE\n"
         "                            (default 15)\n"
         "  --group NAME=FILE,...     students that are repeats of one configuration (seeds):\n"
         "                            mean and sd over them, table summary_groups (repeatable)\n"
         "  -f, --format FMT          table (default), md, csv, tex or json\n"
         "  --nonfinite error|skip    fail on NaN/Inf (default) or drop those samples\n"
         "  --block-rows N            rows per block (default: from a 64 MiB budget)\n"
         "  --join strict|inner       with /sample_ids in both dumps: the same ids in both\n"
         "                            (strict, default) or only the ids both hold (inner)\n"
         "  --ignore-roles            accept a -t dump whose role is student or a -s dump\n"
         "                            whose role is teacher (exit 2 otherwise); said in a "
         "note\n" HELP_MEMORY("       ") HELP_PLAN(
                 "       ") "\nTable summary: one row for the teacher at each checkpoint a "
                            "student is\n"
                            "compared with, then one per student and checkpoint: samples, "
                            "accuracy,\n"
                            "fidelity (top-1 agreement with the teacher), ece, classwise_ece, "
                            "kl (the\n"
                            "mean tau^2 KL(p_t || p_s), as kl's) and nll; definitions in "
                            "docs/summary.md.\n",
         CMD_MEMORY | CMD_PLAN},
        {"report", cmd_report, 0, 0, "write every analysis as figures and tables into a directory",
         "kdlens report -t TEACHER.h5 -s STUDENT.h5 [-s STUDENT.h5 ...] -o DIR [--force] [-T TAU] "
         "[--checkpoint NAME|all] [--teacher-checkpoint NAME|same] [-k K] "
         "[--group NAME=FILE,FILE,...] [--measure M] [--svcca-keep P] [--topk 1,8,32,128] "
         "[--memory LIMIT] [--plan] [--quiet]",
         "  -t, --teacher FILE   the teacher's dump\n"
         "  -s, --student FILE   a student's dump (repeat for several, shown side by side)\n"
         "  -o, --output DIR     the report directory (replaced atomically when complete)\n"
         "  --force              replace DIR even when it is not a previous kdlens report\n"
         "  -T, --temperature T  temperature of the KD criterion (default 4)\n"
         "  -c, --checkpoint C   the student checkpoints analysed: all (default) or a name\n"
         "  --teacher-checkpoint C  the teacher's checkpoint each is compared with and whose\n"
         "                       layers are ranked (default: its last; 'same': the one of\n"
         "                       the same name)\n"
         "  -k, --top K          teacher layers to recommend (default min(4, ceil(n/2)) of\n"
         "                       its n feature layers, as kdlens layers)\n"
         "  --group NAME=FILE,...  students that are repeats of one configuration (seeds):\n"
         "                       mean ± sd over them in the summary (summary_groups) and\n"
         "                       error bars in the figures (repeatable)\n"
         "  --measure M          as kdlens cka's: cca, svcca, pwcca, procrustes or all add\n"
         "                       a figure and table of them side by side for the teacher's\n"
         "                       3 layers of highest CKA with each student's last layer, at\n"
         "                       its last checkpoint, from the same pass (default cka: none)\n"
         "  --svcca-keep P       share of each layer's variance SVCCA keeps (0.99)\n"
         "  --topk LIST          the k of the section on sparse teacher targets (kl --topk;\n"
         "                       default 1,8,32,128 capped at C, when the teacher dump has\n"
         "                       logits_topk or /sequence_ids; else no such section)\n"
         "  --spatial RULE       avg (default), max or flatten for rank-3/4 features\n"
         "  --nonfinite error|skip  fail on NaN/Inf (default), or drop those samples\n"
         "  --block-rows R       rows per block of the streams every checkpoint is read on\n"
         "                       (default: a 64 MiB budget, less under a --memory below\n"
         "                       1 GiB; the layers section sizes its own)\n"
         "  --join strict|inner  with /sample_ids in both dumps: the same ids in both\n"
         "                       (strict, default) or only the ids both hold (inner)\n"
         "  --ignore-roles       accept a -t dump whose role is student or a -s dump\n"
         "                       whose role is teacher (exit 2 otherwise); said in a note\n"
         "  --gnuplot PROGRAM    the gnuplot to run (default: gnuplot on PATH)\n"
         "  --quiet              no progress bar and no closing line\n"
         "  --memory LIMIT       the most memory the report may use: 512M, 4G, 1.5G (binary\n"
         "                       units) or 50% of physical memory (default: half of it); the\n"
         "                       analyses of a checkpoint run together, so their needs add up\n"
         "  --plan               print what each analysis needs and whether their sum fits\n"
         "                       --memory, without reading any data (no -o; -f as the\n"
         "                       commands: table, md, csv, tex or json)\n"
         "DIR may not be an input or a directory holding one; an existing DIR that is not\n"
         "a kdlens report is refused unless --force.\n",
         CMD_MEMORY | CMD_PLAN},
        {"demo", cmd_demo, 0, 0, "write the report of the bundled Fashion-MNIST example",
         "kdlens demo [-o DIR] [--force] [--quiet]",
         "  -o, --output DIR     the report directory (default kdlens-demo)\n"
         "  --force              replace DIR even when it is not a previous kdlens report\n"
         "  --gnuplot PROGRAM    the gnuplot to run (default: gnuplot on PATH)\n"
         "  --quiet              no progress bar and no closing line\n"
         "It is kdlens report with --measure all on the example, read from KDL_EXAMPLE_DIR\n"
         "when set.\n",
         0},
        {"help", cmd_help, 0, 1, "show the help of a command", "kdlens help [--man] [COMMAND]",
         "  --man              print the man page of kdlens, or of COMMAND, in roff (the\n"
         "                     build installs them: man kdlens, man kdlens-COMMAND)\n",
         0},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

const struct kdl_cmd *kdl__cli_commands(size_t *ret_n)
{
        *ret_n = NCOMMANDS;
        return commands;
}

static const struct kdl_cmd *find(const char *name)
{
        for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
                if (strcmp(commands[k].name, name) == 0)
                        return &commands[k];
        return NULL;
}

const struct kdl_cmd *kdl__cli_find(const char *name)
{
        return find(name);
}

/* The output options a command takes: --table, and -o DIR for one CSV per table. */
enum { OUT_TABLE = 1u << 0, OUT_DIR = 1u << 1 };

static unsigned output_options(const struct kdl_cmd *c)
{
        if (strstr(c->usage, "--format")) /* the commands that print their tables */
                return OUT_TABLE | OUT_DIR;
        return c->budget & CMD_PLAN ? OUT_TABLE : 0; /* report --plan */
}

const char *kdl__cli_output_help(const struct kdl_cmd *c)
{
        unsigned out = output_options(c);

        if (out & OUT_DIR)
                return "  --table NAME       print only the table NAME (each command's tables:\n"
                       "                     docs/README.md#tables-by-command); -f csv on\n"
                       "                     standard output needs it: CSV holds one table\n"
                       "  -o, --output DIR   write each table (or the --table one) to the\n"
                       "                     CSV file DIR/NAME.csv (DIR made when missing)\n";
        if (out & OUT_TABLE)
                return "  --table NAME       with --plan: print only the table NAME (plan\n"
                       "                     or plan_parts); -f csv needs it\n";
        return "";
}

static const struct kdl_cli_global globals[] = {
        {"--version", "print the version of kdlens and exit"},
        {"-h, --help", "print the list of commands and exit"},
        {"-q, --quiet", "no progress bar and no closing line (report, demo)"},
};

const struct kdl_cli_global *kdl__cli_globals(size_t *ret_n)
{
        *ret_n = sizeof(globals) / sizeof(globals[0]);
        return globals;
}

/* "; did you mean 'x'?" for the command @typed, into @buf; "" when none is close. */
static const char *verb_hint(const char *typed, char *buf, size_t size)
{
        const char *names[sizeof(commands) / sizeof(commands[0])];

        for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
                names[k] = commands[k].name;
        return kdl__cli_did_you_mean(typed, "", names, sizeof(commands) / sizeof(commands[0]), buf,
                                     size);
}

int kdl_cli_fail(struct kdl_cli *cli, int err)
{
        const char *msg = kdl_errmsg();

        fprintf(cli->err, "kdlens %s: %s\n", cli->verb, msg[0] ? msg : kdl_strerror(err));
        return err == -KDL_EUSAGE ? KDL_EXIT_USAGE : KDL_EXIT_FAILURE;
}

int kdl_cli_usage(struct kdl_cli *cli, const char *fmt, ...)
{
        const struct kdl_cmd *c = find(cli->verb);
        va_list ap;

        fprintf(cli->err, "kdlens %s: ", cli->verb);
        va_start(ap, fmt);
        vfprintf(cli->err, fmt, ap);
        va_end(ap);
        fputc('\n', cli->err);
        if (c)
                fprintf(cli->err, "usage: %s\n", c->usage);
        return KDL_EXIT_USAGE;
}

static void print_help(FILE *out, const struct kdl_cmd *c)
{
        char b[KDL_MEMORY_FMT], p[KDL_MEMORY_FMT];

        fprintf(out, "usage: %s\n\n%s.\n\n%s", c->usage, c->summary, c->help);
        if (*kdl__cli_output_help(c))
                fprintf(out, "\nOutput:\n%s", kdl__cli_output_help(c));
        if (c->budget & CMD_MEMORY)
                fprintf(out,
                        "\nThe default --memory is %s here: half of the %s of physical memory.\n",
                        kdl_memory_format(kdl_memory_default(), b),
                        kdl_memory_format(kdl_memory_physical(), p));
}

int kdl_cli_help(struct kdl_cli *cli)
{
        const struct kdl_cmd *c = find(cli->verb);

        if (c)
                print_help(cli->out, c);
        return KDL_EXIT_OK;
}

int kdl_cli_positional(struct kdl_cli *cli, int n)
{
        const struct kdl_cmd *c = find(cli->verb);

        if (!c || (n >= c->min_args && n <= c->max_args))
                return 0;
        return kdl_cli_usage(cli,
                             n < c->min_args ? "expected at least %d argument%s, found %d"
                                             : "expected at most %d argument%s, found %d",
                             n < c->min_args ? c->min_args : c->max_args,
                             (n < c->min_args ? c->min_args : c->max_args) == 1 ? "" : "s", n);
}

enum kdl_format kdl_cli_default_format(const struct kdl_cli *cli)
{
        (void) cli;
        return KDL_FORMAT_TABLE;
}

void kdl_cli_common_init(struct kdl_cli *cli, struct kdl_cli_common *o,
                         const struct kdl_run_common *run)
{
        *o = (struct kdl_cli_common){.format = kdl_cli_default_format(cli)};
        if (run)
                o->run = *run;
        else
                kdl_run_common_init(&o->run);
}

/* common_option() results besides an exit status and KDL_CLI_OPT_NOT_MINE. */
enum { OPT_TAKEN = -1 };

/* Getopt result @c with argument @arg into @o: OPT_TAKEN; KDL_CLI_OPT_NOT_MINE
 * for the verb's own options; or an exit status (0 after -h, 2 after a usage
 * error, printed). */
static int common_option(struct kdl_cli *cli, struct kdl_cli_common *o, int c, const char *arg)
{
        int n;

        switch (c) {
        case 't':
                o->teacher = arg;
                return OPT_TAKEN;
        case 's':
                if (o->nstudents == KDL_CLI_MAX_STUDENTS)
                        return kdl_cli_usage(cli, "expected at most %d students",
                                             KDL_CLI_MAX_STUDENTS);
                o->students[o->nstudents++] = arg;
                return OPT_TAKEN;
        case 'c':
                o->run.checkpoint = arg;
                return OPT_TAKEN;
        case 'f':
                if (kdl_format_parse(arg, &o->format) < 0)
                        return kdl_cli_usage(cli, "%s", kdl_errmsg());
                return OPT_TAKEN;
        case 'T':
                n = kdl_parse_reals(arg, "--temperature", o->run.tau, KDL_RUN_MAX_TAUS);
                if (n < 0)
                        return kdl_cli_usage(cli, "%s", kdl_errmsg());
                o->run.ntau = (size_t) n;
                return OPT_TAKEN;
        case KDL_OPT_SPATIAL:
                if (kdl_spatial_parse(arg, &o->run.spatial) < 0)
                        return kdl_cli_usage(cli, "%s", kdl_errmsg());
                return OPT_TAKEN;
        case KDL_OPT_NONFINITE:
                if (strcmp(arg, "skip") != 0 && strcmp(arg, "error") != 0)
                        return kdl_cli_usage(cli, "--nonfinite: expected error or skip, found '%s'",
                                             arg);
                o->run.skip_nonfinite = strcmp(arg, "skip") == 0;
                return OPT_TAKEN;
        case KDL_OPT_PER_SAMPLE:
                o->run.per_sample = arg;
                return OPT_TAKEN;
        case KDL_OPT_TEACHER_CHECKPOINT:
                o->run.teacher_checkpoint = arg;
                return OPT_TAKEN;
        case KDL_OPT_TABLE:
                o->table = arg;
                return OPT_TAKEN;
        case 'o':
                o->output = arg;
                return OPT_TAKEN;
        case KDL_OPT_JOIN:
                if (kdl_join_parse(arg, &o->inputs.join) < 0)
                        return kdl_cli_usage(cli, "%s", kdl_errmsg());
                return OPT_TAKEN;
        case KDL_OPT_IGNORE_ROLES:
                o->inputs.roles = KDL_ROLES_IGNORE;
                return OPT_TAKEN;
        case KDL_OPT_BLOCK_ROWS:
                n = kdl_cli_parse_count(cli, "--block-rows", arg, &o->run.block_rows);
                return n ? n : OPT_TAKEN;
        case KDL_OPT_MEMORY:
                n = kdl_cli_parse_memory(cli, arg, &o->run.memory);
                return n ? n : OPT_TAKEN;
        case KDL_OPT_PLAN:
                if (!(find(cli->verb)->budget & CMD_PLAN))
                        return kdl_cli_usage(cli, "--plan: %s does not state its memory needs yet",
                                             cli->verb);
                o->plan = true;
                return OPT_TAKEN;
        case 'h':
                return kdl_cli_help(cli);
        default:
                return KDL_CLI_OPT_NOT_MINE;
        }
}

/* The KDL_CLI_NO_* flag of common option @opt (a getopt result); 0 for the others. */
static unsigned given_flag(int opt)
{
        switch (opt) {
        case 'c':
                return KDL_CLI_NO_CHECKPOINT;
        case 'f':
                return KDL_CLI_NO_FORMAT;
        case 'T':
                return KDL_CLI_NO_TEMPERATURE;
        case KDL_OPT_SPATIAL:
                return KDL_CLI_NO_SPATIAL;
        case KDL_OPT_NONFINITE:
                return KDL_CLI_NO_NONFINITE;
        case KDL_OPT_PER_SAMPLE:
                return KDL_CLI_NO_PER_SAMPLE;
        case KDL_OPT_BLOCK_ROWS:
                return KDL_CLI_NO_BLOCK_ROWS;
        case KDL_OPT_TEACHER_CHECKPOINT:
                return KDL_CLI_NO_TEACHER_CHECKPOINT;
        default:
                return 0;
        }
}

int kdl_cli_parse(struct kdl_cli *cli, int argc, char **argv, const char *shortopts,
                  const struct option *longopts, struct kdl_cli_common *c, kdl_cli_option_fn *own,
                  void *ctx)
{
        int opt, st;

        while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
                if (opt == '?' || opt == ':')
                        return kdl_cli_bad_option(cli, opt, argv, longopts);
                st = common_option(cli, c, opt, optarg);
                if (st == OPT_TAKEN)
                        c->given |= given_flag(opt);
                if (st == KDL_CLI_OPT_NOT_MINE) {
                        st = own(cli, opt, optarg, ctx);
                        if (st == KDL_CLI_OPT_NOT_MINE)
                                return kdl_cli_usage(cli, "unknown option '%s'", argv[optind - 1]);
                        if (st)
                                return st;
                } else if (st != OPT_TAKEN) {
                        return st; /* after -h, or a usage error */
                }
        }
        /* report's -o is its directory, not one of CSV files. */
        st = kdl_cli_output_check(cli, &c->format, c->given & KDL_CLI_NO_FORMAT, c->table,
                                  output_options(find(cli->verb)) & OUT_DIR ? c->output : NULL);
        return st ? st : KDL_CLI_PARSED;
}

int kdl_cli_analyse(struct kdl_cli *cli, const char *teacher, const char *const *students, size_t n,
                    const char *name, kdl_cli_analysis_fn *fn, const void *opts,
                    const struct kdl_cli_common *c)
{
        kdl_inputs *in = NULL;
        kdl_doc *doc = NULL;
        int err, status;

        err = kdl_inputs_open_with(teacher, students, n, &c->inputs, &in);
        err = err ?: kdl_doc_new(name, &doc);
        err = err ?: fn(in, opts, doc);
        status = err < 0 ? kdl_cli_fail(cli, err)
                         : kdl_cli_write_doc(cli, doc, c->format, c->table, c->output);
        kdl_doc_free(doc);
        kdl_inputs_free(in);
        return status;
}

int kdl_cli_parse_memory(struct kdl_cli *cli, const char *arg, size_t *ret)
{
        const struct kdl_cmd *c = find(cli->verb);

        if (!c || !(c->budget & CMD_MEMORY))
                return kdl_cli_usage(cli, "--memory: %s does not state its memory needs yet",
                                     cli->verb);
        if (kdl_memory_parse(arg, kdl_memory_physical(), ret) < 0)
                return kdl_cli_usage(cli, "%s", kdl_errmsg());
        return 0;
}

int kdl_cli_reject(struct kdl_cli *cli, const struct kdl_cli_common *o, unsigned what)
{
        /* "OPTION: VERB WHY" */
        static const struct {
                unsigned flag;
                const char *option, *why;
        } refused[] = {
                {KDL_CLI_NO_TEMPERATURE, "-T/--temperature", "has no temperature"},
                {KDL_CLI_NO_PER_SAMPLE, "--per-sample", "has no per-sample values"},
                {KDL_CLI_NO_TEACHER_CHECKPOINT, "--teacher-checkpoint",
                 "pairs checkpoints by name"},
                {KDL_CLI_NO_CHECKPOINT, "-c/--checkpoint", "has no checkpoint to choose"},
                {KDL_CLI_NO_SPATIAL, "--spatial",
                 "reads only logits and labels: no feature to reduce"},
                {KDL_CLI_NO_NONFINITE, "--nonfinite", "reads no values"},
                {KDL_CLI_NO_BLOCK_ROWS, "--block-rows",
                 "sizes its blocks from its memory budget, not by rows"},
                {KDL_CLI_NO_FORMAT, "-f/--format",
                 "writes every format (HTML, Markdown, LaTeX, CSV, JSON)"},
        };

        for (size_t k = 0; k < sizeof(refused) / sizeof(refused[0]); k++)
                if (what & o->given & refused[k].flag)
                        return kdl_cli_usage(cli, "%s: %s %s", refused[k].option, cli->verb,
                                             refused[k].why);
        return 0;
}

static void print_overview(FILE *out)
{
        fputs("usage: " KDL_CLI_USAGE "\n\n" KDL_CLI_ABOUT "\n\nCommands:\n", out);
        for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
                fprintf(out, "  %-10s %s\n", commands[k].name, commands[k].summary);
        fputs("\nOptions:\n", out);
        for (size_t k = 0; k < sizeof(globals) / sizeof(globals[0]); k++)
                fprintf(out, "  %-12s %s\n", globals[k].spec, globals[k].help);
        fputs("\nRun 'kdlens COMMAND -h' for the options of a command.  " KDL_CLI_DOCS "\n", out);
}

/* help --man [COMMAND]: the man page of kdlens or of COMMAND, in roff. */
static int man(struct kdl_cli *cli, int argc, char **argv)
{
        const struct kdl_cmd *c = argc > 1 ? find(argv[1]) : NULL;
        char hint[128];

        if (argc > 2)
                return kdl_cli_usage(cli, "--man: expected at most one command, found %d",
                                     argc - 1);
        if (argc > 1 && !c)
                return kdl_cli_usage(cli, "--man: unknown command '%s'%s", argv[1],
                                     verb_hint(argv[1], hint, sizeof(hint)));
        if (kdl__cli_man(cli->out, c) < 0 || fflush(cli->out) != 0)
                return kdl_cli_fail(cli, kdl_error(-EIO, "cannot write the man page"));
        return KDL_EXIT_OK;
}

int cmd_help(int argc, char **argv, struct kdl_cli *cli)
{
        const struct kdl_cmd *c;
        char hint[128];
        int r;

        if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))
                return kdl_cli_help(cli);
        if (argc > 1 && strcmp(argv[1], "--man") == 0)
                return man(cli, argc - 1, argv + 1);
        r = kdl_cli_positional(cli, argc - 1);
        if (r)
                return r;
        if (argc == 1) {
                print_overview(cli->out);
                return KDL_EXIT_OK;
        }
        c = find(argv[1]);
        if (!c)
                return kdl_cli_usage(cli, "unknown command '%s'%s (see 'kdlens help')", argv[1],
                                     verb_hint(argv[1], hint, sizeof(hint)));
        print_help(cli->out, c);
        return KDL_EXIT_OK;
}

int kdl_cli_run(int argc, char **argv, FILE *out, FILE *err)
{
        struct kdl_cli cli = {.out = out, .err = err, .verb = "", .verbosity = 0};
        const struct kdl_cmd *c;
        char hint[128];
        int i = 1;

        /* Global options before the verb, by hand (git's handle_options). */
        for (; i < argc && argv[i][0] == '-'; i++) {
                if (strcmp(argv[i], "--version") == 0) {
                        fprintf(out, "kdlens %s\n", KDL_VERSION);
                        return KDL_EXIT_OK;
                } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
                        print_overview(out);
                        return KDL_EXIT_OK;
                } else if (strcmp(argv[i], "-q") == 0 || strcmp(argv[i], "--quiet") == 0) {
                        cli.verbosity = -1;
                } else if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0) {
                        cli.verbosity = 1;
                } else {
                        fprintf(err, "kdlens: unknown option '%s'\n", argv[i]);
                        print_overview(err);
                        return KDL_EXIT_USAGE;
                }
        }
        if (i == argc) {
                print_overview(err);
                return KDL_EXIT_USAGE;
        }
        if (strcmp(argv[i], "__complete") == 0) /* the bash completion's helper */
                return kdl__cli_complete(argc - i - 1, argv + i + 1, &cli);
        c = find(argv[i]);
        if (!c) {
                fprintf(err, "kdlens: '%s' is not a kdlens command%s (see 'kdlens help')\n",
                        argv[i], verb_hint(argv[i], hint, sizeof(hint)));
                return KDL_EXIT_USAGE;
        }
        cli.verb = c->name;
        kdl_error_clear();
        optind = 0; /* glibc: re-initialise getopt for each in-process run */
        opterr = 0; /* verbs print their own one-line usage errors */
        return c->fn(argc - i, argv + i, &cli);
}
