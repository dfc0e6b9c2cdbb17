/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_BASE_BLAS_H
#define KDL_METRICS_BASE_BLAS_H

/*
 * BLAS threads around work of our own.  OpenBLAS splits a product over its
 * threads, and after it they do not sleep but spin (sched_yield in a loop) for
 * 2^28 clock ticks, about a tenth of a second, waiting for the next product.
 * Where a block's products are followed by as much work of kdlens's own (kl's
 * per-sample values after the block's two head products), a helper thread
 * spins through all of it: in kdlens kl on 250,000 rows of 1,000 classes that
 * was a third of the CPU time, and the time to the result did not change (the
 * spinning thread takes the core the stream's decoding would use).  Such a
 * region's products run on the calling thread alone; the helpers sleep.  Large
 * products elsewhere keep every thread.  With a BLAS other than OpenBLAS these
 * do nothing.
 *
 *      int saved = kdl__blas_serial_begin();
 *      ... products and per-row work of one block ...
 *      kdl__blas_serial_end(saved);
 */

/* kdl__blas_serial_begin() - one BLAS thread from now on.  Return: the threads before (pass
 * it to kdl__blas_serial_end()). */
int kdl__blas_serial_begin(void);

/* kdl__blas_serial_end() - the @saved threads of kdl__blas_serial_begin() again. */
void kdl__blas_serial_end(int saved);

#endif
