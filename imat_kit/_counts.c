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

/* leftover(text, others, npix) -> (text, area): the mask of COCO counts ``text`` minus every
 * mask of ``others`` (COCO counts texts of the same image, npix pixels), as a COCO counts text
 * and its area: the overlap removal's cut (imat_kit.postprocess.class_leftovers), done on the
 * runs in one pass. None where a text does not decode (the caller's numpy path then says why).
 */
typedef struct { long long *s, *e; Py_ssize_t n, cap; } runs_t;

static int runs_push(runs_t *r, long long s, long long e) {
    if (r->n && r->e[r->n - 1] == s) { r->e[r->n - 1] = e; return 0; }
    if (r->n == r->cap) {
        Py_ssize_t nc = r->cap * 2 + 16;
        long long *ns = PyMem_Realloc(r->s, nc * sizeof(long long));
        if (!ns) return -1;
        r->s = ns;
        long long *ne = PyMem_Realloc(r->e, nc * sizeof(long long));
        if (!ne) return -1;
        r->e = ne;
        r->cap = nc;
    }
    r->s[r->n] = s;
    r->e[r->n] = e;
    r->n++;
    return 0;
}

static int decode_runs(PyObject *o, runs_t *r) {
    /* compressed counts text -> foreground runs [s, e); -1 on a malformed text */
    const unsigned char *t;
    Py_ssize_t len;
    if (PyBytes_Check(o)) {
        t = (const unsigned char *)PyBytes_AS_STRING(o);
        len = PyBytes_GET_SIZE(o);
    } else if (PyUnicode_Check(o) && PyUnicode_IS_ASCII(o)) {
        t = (const unsigned char *)PyUnicode_DATA(o);
        len = PyUnicode_GET_LENGTH(o);
    } else {
        return -1;
    }
    long long x = 0, prev2 = 0, prev1 = 0, pos = 0, m = 0;
    int shift = 0;
    for (Py_ssize_t p = 0; p < len; p++) {
        unsigned c = (unsigned)t[p] - 48u;
        if (c > 63u || shift > 55) return -1;
        x |= (long long)(c & 0x1f) << shift;
        shift += 5;
        if (c & 0x20) continue;
        if (c & 0x10) x |= (long long)-1 << shift;
        if (m > 2) x += prev2;
        if (x < 0) return -1;
        if ((m & 1) && x > 0 && runs_push(r, pos, pos + x) < 0) return -2;
        pos += x;
        prev2 = prev1;
        prev1 = x;
        m++;
        x = 0;
        shift = 0;
    }
    return shift ? -1 : 0;
}

static PyObject *leftover(PyObject *self, PyObject *args) {
    PyObject *text, *others;
    long long npix;
    if (!PyArg_ParseTuple(args, "OOL", &text, &others, &npix)) return NULL;
    PyObject *seq = PySequence_Fast(others, "others must be a sequence of str");
    if (!seq) return NULL;
    runs_t a = {0}, b = {0}, u = {0}, d = {0};
    PyObject *result = NULL;
    char *buf = NULL;
    Py_ssize_t len = 0, cap = 0;
    int rc = decode_runs(text, &a);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
        /* u = u | runs(other i) */
        b.n = 0;
        rc = decode_runs(PySequence_Fast_GET_ITEM(seq, i), &b);
        if (rc) break;
        runs_t m = {0};
        Py_ssize_t p = 0, q = 0;
        while (rc == 0 && (p < u.n || q < b.n)) {
            long long s, e;
            if (q >= b.n || (p < u.n && u.s[p] <= b.s[q])) { s = u.s[p]; e = u.e[p]; p++; }
            else { s = b.s[q]; e = b.e[q]; q++; }
            if (m.n && s <= m.e[m.n - 1]) { if (e > m.e[m.n - 1]) m.e[m.n - 1] = e; }
            else if (runs_push(&m, s, e) < 0) rc = -2;
        }
        PyMem_Free(u.s); PyMem_Free(u.e);
        u = m;
    }
    if (rc == 0) {  /* d = a minus u */
        Py_ssize_t q = 0;
        for (Py_ssize_t p = 0; rc == 0 && p < a.n; p++) {
            long long s = a.s[p], e = a.e[p];
            while (q < u.n && u.e[q] <= s) q++;
            Py_ssize_t k = q;
            while (rc == 0 && s < e) {
                if (k >= u.n || u.s[k] >= e) { rc = runs_push(&d, s, e) < 0 ? -2 : 0; break; }
                if (u.s[k] > s && runs_push(&d, s, u.s[k]) < 0) { rc = -2; break; }
                if (u.e[k] > s) s = u.e[k];
                k++;
            }
        }
    }
    if (rc == -2) { PyErr_NoMemory(); goto done; }
    if (rc == -1 || (d.n && d.e[d.n - 1] > npix)) { Py_INCREF(Py_None); result = Py_None; goto done; }
    long long area = 0, prev1 = 0, prev2 = 0, m = 0, cnt[2];
    for (Py_ssize_t i = 0; i <= d.n; i++) {
        int parts;
        if (i < d.n) {
            cnt[0] = d.s[i] - (i ? d.e[i - 1] : 0);
            cnt[1] = d.e[i] - d.s[i];
            area += cnt[1];
            parts = 2;
        } else {
            cnt[0] = npix - (d.n ? d.e[d.n - 1] : 0);
            parts = (d.n && cnt[0] == 0) ? 0 : 1;
        }
        for (int c = 0; c < parts; c++) {
            long long x = cnt[c];
            if (put_value(&buf, &len, &cap, m > 2 ? x - prev2 : x) < 0) {
                PyErr_NoMemory();
                goto done;
            }
            prev2 = prev1;
            prev1 = x;
            m++;
        }
    }
    result = Py_BuildValue("(s#L)", buf ? buf : "", len, area);
done:
    PyMem_Free(a.s); PyMem_Free(a.e); PyMem_Free(b.s); PyMem_Free(b.e);
    PyMem_Free(u.s); PyMem_Free(u.e); PyMem_Free(d.s); PyMem_Free(d.e); PyMem_Free(buf);
    Py_DECREF(seq);
    return result;
}

/* overlaps(texts, first, second) -> (intersections, areas) | None: the pixels each pair
 * (first[i], second[i]) of COCO counts texts shares (int64 bytes, one per pair) and each text's
 * area (int64 bytes), every text decoded once; None where a text does not decode. What
 * pycocotools' iou computes for every pair of two lists (decoding both lists at each call),
 * for the listed pairs only. */
static PyObject *overlaps(PyObject *self, PyObject *args) {
    PyObject *texts, *first_obj, *second_obj;
    if (!PyArg_ParseTuple(args, "OOO", &texts, &first_obj, &second_obj)) return NULL;
    PyObject *seq = PySequence_Fast(texts, "texts must be a sequence");
    if (!seq) return NULL;
    Py_buffer fb, sb;
    if (PyObject_GetBuffer(first_obj, &fb, PyBUF_SIMPLE) < 0) { Py_DECREF(seq); return NULL; }
    if (PyObject_GetBuffer(second_obj, &sb, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&fb);
        Py_DECREF(seq);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Py_ssize_t pairs = fb.len / (Py_ssize_t)sizeof(int64_t);
    const int64_t *fi = (const int64_t *)fb.buf, *si = (const int64_t *)sb.buf;
    runs_t *r = PyMem_Calloc(n ? n : 1, sizeof(runs_t));
    PyObject *inter = PyBytes_FromStringAndSize(NULL, pairs * (Py_ssize_t)sizeof(int64_t));
    PyObject *areas = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    PyObject *result = NULL;
    if (!r || !inter || !areas) { PyErr_NoMemory(); goto done; }
    if (sb.len != fb.len) { PyErr_SetString(PyExc_ValueError, "overlaps: pair lists differ"); goto done; }
    int64_t *ar = (int64_t *)PyBytes_AS_STRING(areas);
    for (Py_ssize_t i = 0; i < n; i++) {
        int rc = decode_runs(PySequence_Fast_GET_ITEM(seq, i), &r[i]);
        if (rc == -2) { PyErr_NoMemory(); goto done; }
        if (rc == -1) { Py_INCREF(Py_None); result = Py_None; goto done; }
        long long a = 0;
        for (Py_ssize_t k = 0; k < r[i].n; k++) a += r[i].e[k] - r[i].s[k];
        ar[i] = a;
    }
    int64_t *out = (int64_t *)PyBytes_AS_STRING(inter);
    for (Py_ssize_t k = 0; k < pairs; k++) {
        if (fi[k] < 0 || fi[k] >= n || si[k] < 0 || si[k] >= n) {
            PyErr_SetString(PyExc_IndexError, "overlaps: a pair names no text");
            goto done;
        }
        const runs_t *a = &r[fi[k]], *b = &r[si[k]];
        long long total = 0;
        if (a->n && b->n && a->s[0] < b->e[b->n - 1] && b->s[0] < a->e[a->n - 1]) {
            Py_ssize_t p = 0, q = 0;
            while (p < a->n && q < b->n) {
                long long lo = a->s[p] > b->s[q] ? a->s[p] : b->s[q];
                long long hi = a->e[p] < b->e[q] ? a->e[p] : b->e[q];
                if (hi > lo) total += hi - lo;
                if (a->e[p] < b->e[q]) p++; else q++;
            }
        }
        out[k] = total;
    }
    result = Py_BuildValue("(OO)", inter, areas);
done:
    if (r) for (Py_ssize_t i = 0; i < n; i++) { PyMem_Free(r[i].s); PyMem_Free(r[i].e); }
    PyMem_Free(r);
    Py_XDECREF(inter);
    Py_XDECREF(areas);
    PyBuffer_Release(&fb);
    PyBuffer_Release(&sb);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"totals", totals, METH_O,
     "totals(texts) -> (int64 totals, uint8 malformed, int64 areas) as bytes, one per COCO "
     "counts text"},
    {"soft_masks", soft_masks, METH_VARARGS,
     "soft_masks(soft, sh, sw, x0, y0, bw, bh, h, w, thresholds) -> COCO counts texts of a "
     "soft mask stretched over its box and cut at each threshold"},
    {"leftover", leftover, METH_VARARGS,
     "leftover(text, others, npix) -> (text, area): a COCO counts text minus the others"},
    {"overlaps", overlaps, METH_VARARGS,
     "overlaps(texts, first, second) -> (int64 intersections per pair, int64 areas) as bytes"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_counts",
                                    "COCO counts texts checked and soft masks cut at C speed", -1, methods};

PyMODINIT_FUNC PyInit__counts(void) { return PyModule_Create(&module); }
