/* The pixel total and area of many COCO compressed counts texts, in one pass at C speed.
 *
 * totals(texts) -> (totals, malformed, areas): three bytes objects, int64, uint8 and int64 per
 * text. A text's total is the sum of its decoded run lengths (background and foreground alike),
 * which is height x width for a valid mask; its area the sum of the foreground runs (the second,
 * fourth, ... values: COCO's mask area); malformed flags a character outside '0'..'o', a value cut off
 * at the end of the text, a value of more than 12 characters, a value that is not a str of
 * ASCII, and a run length that is negative or does not fit pycocotools' 32-bit counts. The
 * decoding is pycocotools' rleFrString (maskApi.c), which checks none of this: a mask whose runs
 * do not add up to its size makes pycocotools read or write past its buffers, or loop forever
 * (rleIou). imat_kit.rle.coco_strings_totals is the same in numpy, for where this is not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

static PyObject *totals(PyObject *self, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "totals() takes a sequence of str");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *tot = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    PyObject *bad = PyBytes_FromStringAndSize(NULL, n);
    PyObject *area = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    if (!tot || !bad || !area) {
        Py_XDECREF(tot);
        Py_XDECREF(bad);
        Py_XDECREF(area);
        Py_DECREF(seq);
        return NULL;
    }
    int64_t *t = (int64_t *)PyBytes_AS_STRING(tot);
    int64_t *a = (int64_t *)PyBytes_AS_STRING(area);
    char *b = PyBytes_AS_STRING(bad);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    /* Only immutable str objects that seq holds are read, without touching reference counts:
     * the loop runs without the GIL, so a reader thread parses JSON meanwhile. */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = items[i];
        t[i] = 0;
        a[i] = 0;
        b[i] = 0;
        if (!PyUnicode_Check(o) || !PyUnicode_IS_ASCII(o)) {
            b[i] = 1;
            continue;
        }
        const unsigned char *s = (const unsigned char *)PyUnicode_DATA(o);
        Py_ssize_t len = PyUnicode_GET_LENGTH(o);
        int64_t x = 0, prev1 = 0, prev2 = 0, total = 0, fore = 0, m = 0;
        int shift = 0;
        for (Py_ssize_t p = 0; p < len; p++) {
            unsigned c = (unsigned)s[p] - 48u;  /* '0'..'o' are 0..63; the rest wraps above */
            if (c > 63u || shift > 55) { b[i] = 1; break; }  /* (a 13th 5-bit group) */
            x |= (int64_t)(c & 0x1f) << shift;
            shift += 5;
            if (c & 0x20) continue;  /* more groups of this value follow */
            if (c & 0x10) x |= (int64_t)-1 << shift;  /* negative */
            if (m > 2) x += prev2;  /* values from the fourth on: deltas two places back */
            if ((uint64_t)x > 0xFFFFFFFFull) { b[i] = 1; break; }  /* < 0 or past 32 bits */
            total += x;
            if (m & 1) fore += x;  /* the runs alternate background, foreground, ... */
            prev2 = prev1;
            prev1 = x;
            m++;
            x = 0;
            shift = 0;
        }
        if (shift) b[i] = 1;  /* the text ends in the middle of a value */
        t[i] = b[i] ? 0 : total;
        a[i] = b[i] ? 0 : fore;
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(seq);
    return Py_BuildValue("(NNN)", tot, bad, area);
}

/* soft_masks(soft, sh, sw, x0, y0, bw, bh, h, w, thresholds) -> list of COCO counts texts.
 *
 * A soft mask (sh x sw uint8 probabilities x 255, row-major bytes) stretched bilinearly over the
 * box of bw x bh pixels at (x0, y0) of an h x w image (half-pixel centres and clamped edges, as
 * cv2.INTER_LINEAR), cut at each threshold t (a pixel is in when its value >= 255 t). Each output
 * column's profile is linear between the source rows, so its runs come from where the profile
 * crosses 255 t: no pixel is evaluated. imat_kit.postprocess.soft_counts_at holds the same in
 * numpy (the definition, and the fallback where this is not built): the two agree bit for bit
 * (same double operations in the same order; built with -ffp-contract=off). */
static Py_ssize_t first_ge(const double *fy, Py_ssize_t lo, Py_ssize_t hi, double v, int strict) {
    /* the first index in [lo, hi) with fy >= v (fy > v when strict), hi if none */
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (strict ? fy[mid] > v : fy[mid] >= v) hi = mid; else lo = mid + 1;
    }
    return lo;
}

static void taps(Py_ssize_t n_out, Py_ssize_t n_src, Py_ssize_t *lo, double *a) {
    double ratio = (double)n_src / (double)n_out;
    for (Py_ssize_t i = 0; i < n_out; i++) {
        double f = ((double)i + 0.5) * ratio - 0.5;
        double fl = floor(f);
        double w = f - fl;
        Py_ssize_t l = (Py_ssize_t)fl;
        if (l < 0) { l = 0; w = 0.0; }
        if (l >= n_src - 1) { l = n_src - 1; w = 0.0; }
        lo[i] = l;
        a[i] = w;
    }
}

static int put_value(char **buf, Py_ssize_t *len, Py_ssize_t *cap, long long x) {
    int more = 1;
    while (more) {
        if (*len + 1 >= *cap) {
            Py_ssize_t nc = *cap * 2 + 64;
            char *nb = PyMem_Realloc(*buf, nc);
            if (!nb) return -1;
            *buf = nb;
            *cap = nc;
        }
        char c = (char)(x & 0x1f);
        x >>= 5;
        more = (c & 0x10) ? x != -1 : x != 0;
        if (more) c |= 0x20;
        (*buf)[(*len)++] = (char)(c + 48);
    }
    return 0;
}

static PyObject *soft_masks(PyObject *self, PyObject *args) {
    Py_buffer soft;
    Py_ssize_t sh, sw, x0, y0, bw, bh, h, w;
    PyObject *thr_obj;
    if (!PyArg_ParseTuple(args, "y*nnnnnnnnO", &soft, &sh, &sw, &x0, &y0, &bw, &bh, &h, &w,
                          &thr_obj))
        return NULL;
    PyObject *thr = PySequence_Fast(thr_obj, "thresholds must be a sequence of float");
    if (!thr) { PyBuffer_Release(&soft); return NULL; }
    Py_ssize_t k = PySequence_Fast_GET_SIZE(thr);
    if (sh < 1 || sw < 1 || bw < 1 || bh < 1 || soft.len != sh * sw || x0 < 0 || y0 < 0
        || x0 + bw > w || y0 + bh > h) {
        PyErr_SetString(PyExc_ValueError, "soft_masks: sizes do not fit");
        Py_DECREF(thr);
        PyBuffer_Release(&soft);
        return NULL;
    }
    const unsigned char *s = (const unsigned char *)soft.buf;
    Py_ssize_t *lo = PyMem_Malloc(bw * sizeof(Py_ssize_t));
    double *a = PyMem_Malloc(bw * sizeof(double));
    double *r = PyMem_Malloc(sh * bw * sizeof(double));       /* column-major profiles */
    double *fy = PyMem_Malloc(bh * sizeof(double));
    Py_ssize_t *seg = PyMem_Malloc((sh + 1) * sizeof(Py_ssize_t)); /* first row of fy >= j */
    long long *st = PyMem_Malloc((bw * (sh + 1) + 1) * sizeof(long long));
    long long *en = PyMem_Malloc((bw * (sh + 1) + 1) * sizeof(long long));
    PyObject *out = PyList_New(k);
    char *buf = NULL;
    Py_ssize_t cap = 0;
    if (!lo || !a || !r || !fy || !seg || !st || !en || !out) { PyErr_NoMemory(); goto fail; }
    taps(bw, sw, lo, a);
    for (Py_ssize_t x = 0; x < bw; x++) {
        Py_ssize_t l = lo[x], hh = l + 1 < sw ? l + 1 : sw - 1;
        for (Py_ssize_t j = 0; j < sh; j++)
            r[x * sh + j] = (double)s[j * sw + l] * (1 - a[x]) + (double)s[j * sw + hh] * a[x];
    }
    double ry = (double)sh / (double)bh;
    for (Py_ssize_t y = 0; y < bh; y++) fy[y] = ((double)y + 0.5) * ry - 0.5;
    for (Py_ssize_t j = 0; j <= sh; j++) seg[j] = first_ge(fy, 0, bh, (double)j, 0);
    Py_ssize_t head_end = seg[0], tail_start = seg[sh - 1];
    long long npix = (long long)h * (long long)w;
    for (Py_ssize_t q = 0; q < k; q++) {
        double t = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(thr, q));
        if (t == -1.0 && PyErr_Occurred()) goto fail;
        double T = t * 255.0;
        Py_ssize_t n = 0;
        for (Py_ssize_t x = 0; x < bw; x++) {
            const double *p = r + x * sh;
            long long base = (long long)(x0 + x) * h + y0;
            for (Py_ssize_t piece = 0; piece <= sh; piece++) {
                Py_ssize_t a0, a1;
                if (piece == 0) {  /* above the first source row's centre */
                    if (!(p[0] >= T)) continue;
                    a0 = 0;
                    a1 = head_end;
                } else if (piece == sh) {  /* below the last one's */
                    if (!(p[sh - 1] >= T)) continue;
                    a0 = tail_start;
                    a1 = bh;
                } else {
                    Py_ssize_t j = piece - 1;
                    double A = p[j], B = p[j + 1];
                    int up = A < T && B >= T, down = A >= T && B < T, both = A >= T && B >= T;
                    if (!(up || down || both)) continue;
                    double cross = (double)j + (T - A) / (B - A);
                    if (up) {
                        a0 = first_ge(fy, seg[j], bh, cross, 0);
                        a1 = seg[j + 1];
                    } else if (down) {
                        a0 = seg[j];
                        a1 = first_ge(fy, seg[j], bh, cross, 1);
                    } else {
                        a0 = seg[j];
                        a1 = seg[j + 1];
                    }
                }
                if (a1 <= a0) continue;
                long long s0 = base + a0, e0 = base + a1;
                if (n && st[n - 1] <= s0 && en[n - 1] == s0) en[n - 1] = e0;  /* contiguous */
                else { st[n] = s0; en[n] = e0; n++; }
            }
        }
        Py_ssize_t len = 0;
        long long prev1 = 0, prev2 = 0, m = 0;
        long long cnt[2];
        /* counts: background, foreground, ... (the last background dropped when empty) */
        for (Py_ssize_t i = 0; i <= n; i++) {
            int parts = 0;
            if (i < n) {
                cnt[0] = st[i] - (i ? en[i - 1] : 0);
                cnt[1] = en[i] - st[i];
                parts = 2;
            } else {
                cnt[0] = npix - (n ? en[n - 1] : 0);
                parts = (n && cnt[0] == 0) ? 0 : 1;
            }
            for (int c = 0; c < parts; c++) {
                long long x = cnt[c];
                long long v = m > 2 ? x - prev2 : x;
                if (put_value(&buf, &len, &cap, v) < 0) { PyErr_NoMemory(); goto fail; }
                prev2 = prev1;
                prev1 = x;
                m++;
            }
        }
        PyObject *text = PyUnicode_FromStringAndSize(buf ? buf : "", len);
        if (!text) goto fail;
        PyList_SET_ITEM(out, q, text);
    }
    PyMem_Free(lo); PyMem_Free(a); PyMem_Free(r); PyMem_Free(fy); PyMem_Free(seg);
    PyMem_Free(st); PyMem_Free(en); PyMem_Free(buf);
    Py_DECREF(thr);
    PyBuffer_Release(&soft);
    return out;
fail:
    PyMem_Free(lo); PyMem_Free(a); PyMem_Free(r); PyMem_Free(fy); PyMem_Free(seg);
    PyMem_Free(st); PyMem_Free(en); PyMem_Free(buf);
    Py_XDECREF(out);
    Py_DECREF(thr);
    PyBuffer_Release(&soft);
    return NULL;
}

static PyMethodDef methods[] = {
    {"totals", totals, METH_O,
     "totals(texts) -> (int64 totals, uint8 malformed, int64 areas) as bytes, one per COCO "
     "counts text"},
    {"soft_masks", soft_masks, METH_VARARGS,
     "soft_masks(soft, sh, sw, x0, y0, bw, bh, h, w, thresholds) -> COCO counts texts of a "
     "soft mask stretched over its box and cut at each threshold"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_counts",
                                    "COCO counts texts checked and soft masks cut at C speed", -1, methods};

PyMODINIT_FUNC PyInit__counts(void) { return PyModule_Create(&module); }
