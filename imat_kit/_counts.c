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

static PyMethodDef methods[] = {
    {"totals", totals, METH_O,
     "totals(texts) -> (int64 totals, uint8 malformed, int64 areas) as bytes, one per COCO "
     "counts text"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_counts",
                                    "COCO counts texts checked at C speed", -1, methods};

PyMODINIT_FUNC PyInit__counts(void) { return PyModule_Create(&module); }
