/* torchwatch's per-step hot path, compiled: ``tw.log`` and the ``tw.steps`` iterator (with the
 * close of an interval of host sums, see ``snapshot``); and the framing of TensorBoard event
 * records (``records``, for sinks/tensorboard.py).
 *
 * The pure-Python versions (``run.log`` with ``Phase.log``, ``steps._watched`` with
 * ``Phase.end_step``) are the reference and the fallback: this file does the same thing, for the
 * common case only, and hands every other case to them. One deliberate difference: a float32,
 * float64, integer or bool scalar on the CPU is read from host memory when it is logged and summed
 * on the host, where Python keeps a detached tensor until the interval closes (same values, less
 * work, and no read of the interval's sums for count_syncs to count). It
 * uses the CPython API alone (no torch headers), so one build works with any torch version.
 *
 * Why compiled: a training step of a small model leaves the instruction cache cold, and each
 * bytecode of a Python hot path then costs several times what it costs in a micro-benchmark.
 * ``benchmarks/instructions.py`` counts what each path adds to a step.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>
#include <time.h>

#if PY_VERSION_HEX < 0x030A0000  /* Python 3.9; a macro casting its argument, as 3.10's */
static inline PyObject *new_ref(PyObject *obj) { Py_INCREF(obj); return obj; }
#define Py_NewRef(obj) new_ref((PyObject *)(obj))
#endif

/* Phase, Accumulator (and Run, for global_step) declare __slots__: such an attribute is a pointer
 * at a fixed offset in the instance, read here directly (the offsets come from the classes' member
 * descriptors). A generic attribute lookup costs some 200 instructions; this costs a handful. */
typedef struct {
    const char *name;
    Py_ssize_t offset;
} Slot;

static Slot slot_on = {"on"}, slot_step_weight = {"step_weight"}, slot_acc = {"acc"},
            slot_steps = {"steps"}, slot_samples = {"samples"}, slot_data_wait_s = {"data_wait_s"},
            slot_interval_due = {"interval_due"}, slot_interval_start = {"interval_start"},
            slot_closed = {"closed"}, slot_unread_since = {"unread_since"},
            slot_values = {"values"}, slot_host = {"host"}, slot_partials = {"partials"},
            slot_pending = {"pending"}, slot_global_step = {"global_step"},
            slot_open_step = {"open_step"}, slot_order = {"order"};
static PyTypeObject *phase_type, *accumulator_type, *run_type;
static PyObject *perf_counter, *time_time;  /* time.perf_counter, time.time */

static int
find_slot(PyTypeObject *type, Slot *slot)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)type, slot->name);
    if (descr == NULL)
        return -1;
    int ok = Py_TYPE(descr) == &PyMemberDescr_Type
             && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
    if (ok)
        slot->offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    else
        PyErr_Format(PyExc_TypeError, "torchwatch: %s.%s must be a __slots__ attribute",
                     type->tp_name, slot->name);
    Py_DECREF(descr);
    return ok ? 0 : -1;
}

/* obj.<slot>, borrowed; NULL when unset, without an error */
static inline PyObject *
slot_value(PyObject *obj, const Slot *slot)
{
    return *(PyObject **)((char *)obj + slot->offset);
}

/* obj.<slot>, borrowed; NULL (and an AttributeError) when unset */
static PyObject *
get_slot_borrowed(PyObject *obj, const Slot *slot)
{
    PyObject *value = slot_value(obj, slot);
    if (value == NULL)
        PyErr_Format(PyExc_AttributeError, "'%s' object has no attribute '%s'",
                     Py_TYPE(obj)->tp_name, slot->name);
    return value;
}

/* obj.<slot> as a new reference; AttributeError when unset */
static PyObject *
get_slot(PyObject *obj, const Slot *slot)
{
    PyObject *value = get_slot_borrowed(obj, slot);
    return value == NULL ? NULL : Py_NewRef(value);
}

/* obj.<slot> = value */
static void
set_slot(PyObject *obj, const Slot *slot, PyObject *value)
{
    PyObject **where = (PyObject **)((char *)obj + slot->offset);
    PyObject *old = *where;
    *where = Py_NewRef(value);
    Py_XDECREF(old);
}

/* obj.<slot> += amount; the new value, borrowed from the slot (NULL on error) */
static PyObject *
add_to_slot(PyObject *obj, const Slot *slot, PyObject *amount)
{
    PyObject *old = get_slot(obj, slot);
    if (old == NULL)
        return NULL;
    PyObject *sum = PyNumber_Add(old, amount);
    Py_DECREF(old);
    if (sum == NULL)
        return NULL;
    set_slot(obj, slot, sum);
    Py_DECREF(sum);
    return sum;
}

/* *number += amount in place, for a float that only its container holds: nobody can see it
 * change, and the step allocates no float. 0 (nothing done) for any other object. */
static int
add_in_place(PyObject *number, double amount)
{
    if (!PyFloat_CheckExact(number) || Py_REFCNT(number) != 1)
        return 0;
    ((PyFloatObject *)number)->ob_fval += amount;
    return 1;
}

/* obj.<slot> += amount for a float amount; -1 on error */
static int
add_float_to_slot(PyObject *obj, const Slot *slot, double amount)
{
    PyObject *old = slot_value(obj, slot);
    if (old != NULL && add_in_place(old, amount))
        return 0;
    PyObject *add = PyFloat_FromDouble(amount);
    if (add == NULL)
        return -1;
    PyObject *sum = add_to_slot(obj, slot, add);
    Py_DECREF(add);
    return sum == NULL ? -1 : 0;
}

/* attribute and keyword names, interned once */
static PyObject *s_ndim, *s_dtype, *s_requires_grad, *s_detach, *s_shape, *s_log_one,
    *s_version, *s_is_inference, *s_close_interval, *s_loss, *s_close, *s_is_cpu, *s_is_neg,
    *s_data_ptr, *s_n, *s_host, *s_lr, *s_read_ready, *s_log_every, *s_param_groups;
static PyObject *one_float, *one_long, *zero_long;

/* ---- tw.log --------------------------------------------------------------------------------- */

/* what configure() was given: the Python tw.log, the list of active phases, torch.Tensor,
 * the complex dtypes, the dtypes read on the host (in the order of HOST_DTYPES), and FOLD_AT - 1
 * (a metric's list longer than this takes the slow path, which folds it) */
static PyObject *slow_log, *active, *tensor_type, *complex_dtypes, *host_dtypes;
static Py_ssize_t fold_limit;

/* what hot_kind() finds: not a hot scalar; a hot one kept as a tensor; or one whose value is read
 * from host memory on the CPU, by its C type (configure's host dtypes come in this order) */
enum { NOT_HOT, HOT, HOT_FLOAT32, HOT_FLOAT64, HOT_INT64, HOT_INT32, HOT_INT16, HOT_INT8,
       HOT_UINT8, HOT_BOOL };
#define FIRST_HOST HOT_FLOAT32
#define HOST_DTYPES (HOT_BOOL - FIRST_HOST + 1)

/* Attributes of a torch.Tensor (exactly that type) read through their getters: torch.Tensor
 * inherits ndim, dtype, is_cpu, shape and requires_grad from its C base as getset descriptors,
 * which take precedence over an instance's __dict__, so calling the getter is what the generic
 * lookup would end in, without its ~100 instructions a read (type cache, descriptor protocol).
 * configure() finds them; one that is not a getset there (say, redefined in Python) keeps the
 * generic lookup. */
typedef struct {
    PyObject **name;
    getter get;
    void *closure;
} TensorAttr;

static TensorAttr attr_ndim = {&s_ndim}, attr_dtype = {&s_dtype}, attr_is_cpu = {&s_is_cpu},
                  attr_shape = {&s_shape}, attr_requires_grad = {&s_requires_grad},
                  attr_version = {&s_version};
static TensorAttr *const tensor_attrs[] = {&attr_ndim, &attr_dtype, &attr_is_cpu, &attr_shape,
                                           &attr_requires_grad, &attr_version};
#define N_TENSOR_ATTRS (sizeof(tensor_attrs) / sizeof(tensor_attrs[0]))

/* Methods of a torch.Tensor called without arguments: is_neg, is_inference and data_ptr are C
 * functions of its base, called here as the method lookup would end in (an instance's __dict__
 * aside, which no tensor puts them in) without the lookup (~150 instructions a call). configure() finds them;
 * one that is not a C method there keeps the generic call. */
typedef struct {
    PyObject **name;
    PyCFunction call;  /* a METH_NOARGS function, called as call(tensor, NULL) */
} TensorMethod;

static TensorMethod method_is_neg = {&s_is_neg}, method_data_ptr = {&s_data_ptr},
                    method_is_inference = {&s_is_inference};
static TensorMethod *const tensor_methods[] = {&method_is_neg, &method_data_ptr,
                                               &method_is_inference};
#define N_TENSOR_METHODS (sizeof(tensor_methods) / sizeof(tensor_methods[0]))

static void
find_getter(TensorAttr *attr)
{
    PyObject *descr = _PyType_Lookup((PyTypeObject *)tensor_type, *attr->name);  /* borrowed */
    attr->get = NULL;
    if (descr != NULL && Py_TYPE(descr) == &PyGetSetDescr_Type) {
        PyGetSetDef *def = ((PyGetSetDescrObject *)descr)->d_getset;
        attr->get = def->get;
        attr->closure = def->closure;
    }
}

static void
find_method(TensorMethod *method)
{
    PyObject *descr = _PyType_Lookup((PyTypeObject *)tensor_type, *method->name);  /* borrowed */
    method->call = NULL;
    if (descr != NULL && Py_TYPE(descr) == &PyMethodDescr_Type) {
        PyMethodDef *def = ((PyMethodDescrObject *)descr)->d_method;
        if ((def->ml_flags & ~METH_COEXIST) == METH_NOARGS)
            method->call = def->ml_meth;
    }
}

/* direct() -> the names of the attributes read through their getters and of the methods
 * called through their C functions */
static PyObject *
direct(PyObject *module, PyObject *unused)
{
    PyObject *names = PyList_New(0);
    for (size_t i = 0; names != NULL && i < N_TENSOR_ATTRS; i++)
        if (tensor_attrs[i]->get != NULL && PyList_Append(names, *tensor_attrs[i]->name) < 0)
            Py_CLEAR(names);
    for (size_t i = 0; names != NULL && i < N_TENSOR_METHODS; i++)
        if (tensor_methods[i]->call != NULL
            && PyList_Append(names, *tensor_methods[i]->name) < 0)
            Py_CLEAR(names);
    return names;
}

/* tensor.<attr> for a tensor of exactly type torch.Tensor, as a new reference */
static PyObject *
tensor_attr(PyObject *tensor, const TensorAttr *attr)
{
    return attr->get != NULL ? attr->get(tensor, attr->closure)
                             : PyObject_GetAttr(tensor, *attr->name);
}

/* tensor.<method>() for a tensor of exactly type torch.Tensor, as a new reference */
static PyObject *
tensor_method(PyObject *tensor, const TensorMethod *method)
{
    return method->call != NULL ? method->call(tensor, NULL)
                                : PyObject_CallMethodNoArgs(tensor, *method->name);
}

/* tensor.<method>() for a method returning a bool: 1 or 0, -1 on error */
static int
tensor_flag(PyObject *tensor, const TensorMethod *method)
{
    PyObject *flag = tensor_method(tensor, method);
    if (flag == NULL)
        return -1;
    int set = flag != Py_False;
    Py_DECREF(flag);
    return set;
}

/* whether a new reference from a getter is the int 0; releases it (-1 on error) */
static int
is_zero(PyObject *number)
{
    if (number == NULL)
        return -1;
    int zero = number == zero_long || (PyLong_CheckExact(number) && PyLong_AsLong(number) == 0);
    Py_DECREF(number);
    return PyErr_Occurred() ? -1 : zero;
}

/* HOT for a 0-dim tensor of exactly type torch.Tensor with a real dtype (HOT_FLOAT32 ... HOT_BOOL
 * for those read on the host), NOT_HOT otherwise, -1 on error */
static int
hot_kind(PyObject *item)
{
    if ((PyObject *)Py_TYPE(item) != tensor_type)
        return NOT_HOT;
    int zero = is_zero(tensor_attr(item, &attr_ndim));
    if (zero <= 0)
        return zero < 0 ? -1 : NOT_HOT;
    PyObject *dtype = tensor_attr(item, &attr_dtype);
    if (dtype == NULL)
        return -1;
    int kind = HOT;
    for (Py_ssize_t i = 0; i < HOST_DTYPES; i++)
        if (PyTuple_GET_ITEM(host_dtypes, i) == dtype) {
            kind = FIRST_HOST + (int)i;
            break;
        }
    for (Py_ssize_t i = 0; kind == HOT && i < PyTuple_GET_SIZE(complex_dtypes); i++)
        if (PyTuple_GET_ITEM(complex_dtypes, i) == dtype)
            kind = NOT_HOT;
    Py_DECREF(dtype);
    return kind;
}

/* The value of a 0-dim tensor of a host dtype (float32, float64, an integer or bool) on the CPU,
 * as a double (integers and bools are cast, as Phase.log casts them), read from the host memory
 * it already lives in: no kernel, no copy, nothing to wait for (CPU ops have finished when they
 * return). 1 when read; 0 when it must take the device path instead (another device, a negative
 * view, no storage: functorch's wrappers, zero tensors); -1 on error. */
static int
read_on_host(PyObject *item, int kind, double *out)
{
    PyObject *flag = tensor_attr(item, &attr_is_cpu);
    if (flag == NULL)
        return -1;
    int cpu = flag == Py_True;
    Py_DECREF(flag);
    if (!cpu)
        return 0;
    int neg = tensor_flag(item, &method_is_neg);  /* its memory holds minus its value */
    if (neg != 0)
        return neg < 0 ? -1 : 0;
    PyObject *address = tensor_method(item, &method_data_ptr);
    if (address == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_RuntimeError))
            return -1;
        PyErr_Clear();  /* "doesn't have storage": the device path handles it */
        return 0;
    }
    const void *data = PyLong_AsVoidPtr(address);
    Py_DECREF(address);
    if (data == NULL)
        return PyErr_Occurred() ? -1 : 0;
    switch (kind) {
#define READ_AS(type)                        \
    {                                        \
        type value;                          \
        memcpy(&value, data, sizeof value);  \
        *out = (double)value;                \
        break;                               \
    }
    case HOT_FLOAT32: READ_AS(float)
    case HOT_FLOAT64: READ_AS(double)
    case HOT_INT64: READ_AS(int64_t)
    case HOT_INT32: READ_AS(int32_t)
    case HOT_INT16: READ_AS(int16_t)
    case HOT_INT8: READ_AS(int8_t)
    case HOT_UINT8: READ_AS(uint8_t)
    case HOT_BOOL: {
        uint8_t value;
        memcpy(&value, data, sizeof value);
        *out = value != 0;
        break;
    }
#undef READ_AS
    default:
        return 0;
    }
    return 1;
}

/* 1 when the tensor was changed in place before it was logged (its version counter moved): a
 * parameter or a buffer, which may change again before its interval is read, so _log_one keeps a
 * copy of it (values.held); 0 when not, or for an inference tensor (it keeps no counter); -1 on
 * error */
static int
changed_before(PyObject *item)
{
    int inference = tensor_flag(item, &method_is_inference);
    if (inference != 0)
        return inference < 0 ? -1 : 0;
    int zero = is_zero(tensor_attr(item, &attr_version));
    return zero < 0 ? -1 : !zero;
}

/* sums[i] += amount, for a list of Python floats */
static int
add_to_item(PyObject *sums, Py_ssize_t i, double amount)
{
    if (add_in_place(PyList_GET_ITEM(sums, i), amount))
        return 0;
    double old = PyFloat_AsDouble(PyList_GET_ITEM(sums, i));
    if (old == -1.0 && PyErr_Occurred())
        return -1;
    PyObject *sum = PyFloat_FromDouble(old + amount);
    return sum == NULL ? -1 : PyList_SetItem(sums, i, sum);
}

/* Accumulator.add for a float: acc.host[name] += [value * weight, weight, non-finite] */
static int
add_on_host(PyObject *acc, PyObject *name, double value, double weight)
{
    PyObject *host = get_slot(acc, &slot_host);
    if (host == NULL)
        return -1;
    int rc = -1;
    if (!PyDict_CheckExact(host)) {
        PyErr_SetString(PyExc_TypeError, "torchwatch: an accumulator's host sums must be a dict");
        goto done;
    }
    PyObject *sums = PyDict_GetItemWithError(host, name);  /* borrowed */
    if (sums == NULL) {
        if (PyErr_Occurred())
            goto done;
        PyObject *fresh = Py_BuildValue("[ddd]", 0.0, 0.0, 0.0);
        if (fresh == NULL)
            goto done;
        int set = PyDict_SetItem(host, name, fresh);
        Py_DECREF(fresh);  /* the dict holds it */
        if (set < 0)
            goto done;
        sums = fresh;
        /* the order the phase's results take: Accumulator.add does the same */
        PyObject *order = slot_value(acc, &slot_order);
        if (order == NULL || !PyDict_CheckExact(order)) {
            PyErr_SetString(PyExc_TypeError, "torchwatch: an accumulator's order must be a dict");
            goto done;
        }
        if (PyDict_SetDefault(order, name, Py_None) == NULL)
            goto done;
    }
    if (!PyList_CheckExact(sums) || PyList_GET_SIZE(sums) != 3) {
        PyErr_SetString(PyExc_TypeError, "torchwatch: host sums must be a list of three floats");
        goto done;
    }
    if (add_to_item(sums, 0, value * weight) < 0 || add_to_item(sums, 1, weight) < 0)
        goto done;
    if (!isfinite(value) && add_to_item(sums, 2, 1.0) < 0)
        goto done;
    rc = 0;
done:
    Py_DECREF(host);
    return rc;
}

/* Phase.log's loop body for one (name, item). A scalar of a host dtype on the CPU is added to the
 * host sums at once; another hot scalar is appended to its list (detached); anything else, the
 * first value of a metric on another device, or a tensor changed in place before (copied
 * there), goes to _log_one. */
static int
record(PyObject *phase, PyObject *acc, PyObject *values, PyObject *name, PyObject *item,
       PyObject *weight)
{
    int kind = hot_kind(item);
    if (kind < 0)
        return -1;
    /* the weight is the step's samples (an int) or 1.0 */
    if (kind >= FIRST_HOST && (PyFloat_CheckExact(weight) || PyLong_CheckExact(weight))) {
        double value, w = PyFloat_AsDouble(weight);
        if (w == -1.0 && PyErr_Occurred())
            return -1;
        int read = read_on_host(item, kind, &value);
        if (read < 0)
            return -1;
        if (read)
            return add_on_host(acc, name, value, w);
    }
    if (kind != NOT_HOT) {
        PyObject *pairs = PyDict_GetItemWithError(values, name);
        if (pairs == NULL && PyErr_Occurred())
            return -1;
        int changed = 0;
        if (pairs != NULL && PyList_CheckExact(pairs) && PyList_GET_SIZE(pairs) < fold_limit
            && (changed = changed_before(item)) == 0) {
            Py_INCREF(pairs);
            PyObject *grad = tensor_attr(item, &attr_requires_grad);
            PyObject *value = NULL;
            if (grad != NULL) {
                if (grad == Py_True)
                    value = PyObject_CallMethodNoArgs(item, s_detach);
                else {
                    value = item;
                    Py_INCREF(value);
                }
                Py_DECREF(grad);
            }
            int rc = -1;
            if (value != NULL) {
                PyObject *pair = PyTuple_Pack(2, value, weight);
                Py_DECREF(value);
                if (pair != NULL) {
                    rc = PyList_Append(pairs, pair);
                    Py_DECREF(pair);
                }
            }
            Py_DECREF(pairs);
            return rc;
        }
        if (changed < 0)
            return -1;
    }
    PyObject *args[5] = {phase, name, item, weight, Py_None};
    PyObject *done = PyObject_VectorcallMethod(s_log_one, args, 5, NULL);
    if (done == NULL)
        return -1;
    Py_DECREF(done);
    return 0;
}

/* n= as Phase.log takes it without a message: an int or a float (exactly those types) strictly
 * between -1e300 and 1e300, as a new float; NULL, without an error, for anything else (None, a
 * tensor, NaN, a huge int: the Python tw.log converts it or explains it) */
static PyObject *
plain_weight(PyObject *n)
{
    if (!PyFloat_CheckExact(n) && !PyLong_CheckExact(n))
        return NULL;
    double w = PyFloat_AsDouble(n);  /* an int beyond a double: OverflowError */
    if (w == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return NULL;
    }
    return (w > -1e300 && w < 1e300) ? PyFloat_FromDouble(w) : NULL;
}

/* tw.log(value=None, /, *, n=None, **metrics): 0-dim tensors, with n= an int or a float or
 * without it, are recorded here; any other call goes to the Python tw.log unchanged. */
static PyObject *
hot_log(PyObject *module, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *value = nargs == 1 ? args[0] : NULL;
    if (slow_log == NULL || nargs > 1 || PyList_GET_SIZE(active) == 0)
        goto slow;
    if (value == Py_None)
        value = NULL;
    if (value != NULL && (PyObject *)Py_TYPE(value) != tensor_type)
        goto slow;
    Py_ssize_t at_n = -1;  /* where n= is among the keywords */
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_GET_LENGTH(key) == 1 && PyUnicode_READ_CHAR(key, 0) == 'n')
            at_n = i;
    }
    PyObject *given_n = at_n < 0 || args[nargs + at_n] == Py_None ? NULL : args[nargs + at_n];

    PyObject *phase = PyList_GET_ITEM(active, PyList_GET_SIZE(active) - 1);
    if (Py_TYPE(phase) != phase_type)
        goto slow;
    Py_INCREF(phase);
    PyObject *on = NULL, *weight = NULL, *acc = NULL, *values = NULL, *result = NULL;
    on = get_slot(phase, &slot_on);
    if (on == NULL)
        goto done;
    int enabled = PyObject_IsTrue(on);
    if (enabled <= 0) {
        if (enabled == 0)
            result = Py_NewRef(Py_None);
        goto done;
    }
    if (given_n != NULL) {
        weight = plain_weight(given_n);
        if (weight == NULL) {
            if (PyErr_Occurred())
                goto done;
            Py_DECREF(on);
            Py_DECREF(phase);
            goto slow;  /* Python converts it, or explains it */
        }
    }
    else {
        weight = get_slot(phase, &slot_step_weight);  /* the step's samples, or None */
        if (weight == NULL)
            goto done;
        int given = PyObject_IsTrue(weight);
        if (given < 0)
            goto done;
        if (!given)
            Py_SETREF(weight, Py_NewRef(one_float));
    }
    acc = get_slot(phase, &slot_acc);
    if (acc == NULL)
        goto done;
    if (Py_TYPE(acc) != accumulator_type) {
        PyErr_SetString(PyExc_TypeError, "torchwatch: a phase's acc must be an Accumulator");
        goto done;
    }
    values = get_slot(acc, &slot_values);
    if (values == NULL)
        goto done;
    if (!PyDict_CheckExact(values)) {
        PyErr_SetString(PyExc_TypeError, "torchwatch: a phase's accumulator values must be a dict");
        goto done;
    }
    if (value != NULL && record(phase, acc, values, s_loss, value, weight) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < nkw; i++)
        if (i != at_n
            && record(phase, acc, values, PyTuple_GET_ITEM(kwnames, i), args[nargs + i], weight) < 0)
            goto done;
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(values);
    Py_XDECREF(acc);
    Py_XDECREF(weight);
    Py_XDECREF(on);
    Py_DECREF(phase);
    return result;
slow:
    if (slow_log == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "torchwatch._speedups.log used before configure()");
        return NULL;
    }
    return PyObject_Vectorcall(slow_log, args, nargsf, kwnames);
}

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *log, *phases, *tensor, *complex, *host;
    PyTypeObject *phase, *accumulator, *run;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "OO!OO!O!nO!O!O!:configure", &log, &PyList_Type, &phases,
                          &tensor, &PyTuple_Type, &complex, &PyTuple_Type, &host, &limit,
                          &PyType_Type, &phase, &PyType_Type, &accumulator, &PyType_Type, &run))
        return NULL;
    if (PyTuple_GET_SIZE(host) != HOST_DTYPES) {
        PyErr_Format(PyExc_ValueError, "configure: %d host dtypes expected, got %zd",
                     HOST_DTYPES, PyTuple_GET_SIZE(host));
        return NULL;
    }
    Slot *phase_slots[] = {&slot_on, &slot_step_weight, &slot_acc, &slot_steps, &slot_samples,
                           &slot_data_wait_s, &slot_interval_due, &slot_interval_start,
                           &slot_closed, &slot_unread_since, &slot_open_step};
    for (size_t i = 0; i < sizeof(phase_slots) / sizeof(phase_slots[0]); i++)
        if (find_slot(phase, phase_slots[i]) < 0)
            return NULL;
    Slot *accumulator_slots[] = {&slot_values, &slot_host, &slot_partials, &slot_pending,
                                 &slot_order};
    for (size_t i = 0; i < sizeof(accumulator_slots) / sizeof(accumulator_slots[0]); i++)
        if (find_slot(accumulator, accumulator_slots[i]) < 0)
            return NULL;
    if (find_slot(run, &slot_global_step) < 0)
        return NULL;
    Py_XSETREF(run_type, (PyTypeObject *)Py_NewRef(run));
    Py_XSETREF(phase_type, (PyTypeObject *)Py_NewRef(phase));
    Py_XSETREF(accumulator_type, (PyTypeObject *)Py_NewRef(accumulator));
    Py_XSETREF(slow_log, Py_NewRef(log));
    Py_XSETREF(active, Py_NewRef(phases));
    Py_XSETREF(tensor_type, Py_NewRef(tensor));
    Py_XSETREF(complex_dtypes, Py_NewRef(complex));
    Py_XSETREF(host_dtypes, Py_NewRef(host));
    for (size_t i = 0; i < N_TENSOR_ATTRS; i++)
        find_getter(tensor_attrs[i]);
    for (size_t i = 0; i < N_TENSOR_METHODS; i++)
        find_method(tensor_methods[i]);
    fold_limit = limit;
    Py_RETURN_NONE;
}

/* ---- the tw.steps iterator ------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *phase, *run, *iterator, *clock, *fixed, *bar, *show, *first_rows;
    PyObject *rows;  /* samples of the item handed out last, until its step ends; else NULL */
    PyObject *lr_tags;  /* run.lr_tags(): [(optimizer, its lr tags), ...]; None: no lrs */
    PyObject *log_every;  /* run.log_every */
    double bar_secs, bar_due, wait, read_secs;
    Py_ssize_t done, max_unread;
    int is_train, finished;
    int monotonic;  /* the run's clock is time.perf_counter: read CLOCK_MONOTONIC here instead */
} Watched;

static int
read_clock(Watched *w, double *now)
{
#ifdef CLOCK_MONOTONIC
    if (w->monotonic) {  /* only differences of these readings are used: any steady clock does */
        struct timespec ts;
        if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
            *now = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
            return 0;
        }
        w->monotonic = 0;
    }
#endif
    PyObject *t = PyObject_CallNoArgs(w->clock);
    if (t == NULL)
        return -1;
    *now = PyFloat_AsDouble(t);
    Py_DECREF(t);
    return (*now == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* first_tensor_rows(item) for an (x, ...) tuple or list, or a lone tensor; Python otherwise */
static PyObject *
rows_of(Watched *w, PyObject *item)
{
    PyObject *first = NULL;
    PyTypeObject *kind = Py_TYPE(item);
    if (kind == &PyTuple_Type && PyTuple_GET_SIZE(item) > 0)
        first = PyTuple_GET_ITEM(item, 0);
    else if (kind == &PyList_Type && PyList_GET_SIZE(item) > 0)
        first = PyList_GET_ITEM(item, 0);
    else if ((PyObject *)kind == tensor_type)
        first = item;
    if (first == NULL || (PyObject *)Py_TYPE(first) != tensor_type)
        return PyObject_CallOneArg(w->first_rows, item);
    Py_INCREF(first);
    /* the shape, not len(): torch.Tensor.__len__ is Python, several times the cost */
    PyObject *shape = tensor_attr(first, &attr_shape);
    Py_DECREF(first);
    if (shape == NULL)
        return NULL;
    PyObject *rows = (PyTuple_Check(shape) && PyTuple_GET_SIZE(shape) > 0)
                         ? Py_NewRef(PyTuple_GET_ITEM(shape, 0))
                         : Py_NewRef(one_long);
    Py_DECREF(shape);
    return rows;
}

/* {tag: lr} of every param group, as run.learning_rates() reads them; NULL without an error
 * where an lr is not a float or the groups are not as tagged: Phase.close_interval reads those */
static PyObject *
read_lrs(Watched *w)
{
    PyObject *lrs = PyDict_New();
    if (lrs == NULL || w->lr_tags == Py_None)
        return lrs;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(w->lr_tags); i++) {
        PyObject *pair = PyList_GET_ITEM(w->lr_tags, i);
        PyObject *tags = PyTuple_GET_ITEM(pair, 1);
        PyObject *groups = PyObject_GetAttr(PyTuple_GET_ITEM(pair, 0), s_param_groups);
        int usable = groups != NULL && PyList_CheckExact(groups)
                     && PyList_GET_SIZE(groups) == PyTuple_GET_SIZE(tags);
        for (Py_ssize_t j = 0; usable && j < PyList_GET_SIZE(groups); j++) {
            PyObject *group = PyList_GET_ITEM(groups, j);
            PyObject *lr = PyDict_CheckExact(group) ? PyDict_GetItemWithError(group, s_lr) : NULL;
            usable = lr != NULL && PyFloat_CheckExact(lr)
                     && PyDict_SetItem(lrs, PyTuple_GET_ITEM(tags, j), lr) == 0;
        }
        Py_XDECREF(groups);
        if (!usable) {
            Py_DECREF(lrs);
            return NULL;  /* with the error raised, if any */
        }
    }
    return lrs;
}

/* 1 if acc holds only host sums: no tensor buffered, no partial (else Python copies them) */
static int
only_host_sums(PyObject *acc)
{
    PyObject *values = slot_value(acc, &slot_values), *partials = slot_value(acc, &slot_partials);
    if (values == NULL || !PyDict_CheckExact(values) || partials == NULL
        || !PyDict_CheckExact(partials) || PyDict_GET_SIZE(partials) != 0)
        return 0;
    Py_ssize_t at = 0;
    PyObject *name, *buffered;
    while (PyDict_Next(values, &at, &name, &buffered))
        if (!PyList_CheckExact(buffered) || PyList_GET_SIZE(buffered) != 0)
            return 0;
    return 1;
}

/* Phase.close_interval without Python, for an interval of host sums only: its end, wall time,
 * counters, lrs and host sums go to phase.closed, which Phase.settle() turns into the closed
 * interval close_interval would have made, when the intervals are next read. A close in Python
 * costs ~25 µs run cold after a training step; this, a few. 1 when done, 0 where
 * close_interval must do it (phase.closed is None: CUDA, a GradScaler, on_nan="raise"; tensors
 * buffered; an lr that is not a float), -1 on error. */
static int
snapshot(Watched *w)
{
    PyObject *phase = w->phase;
    PyObject *closed = slot_value(phase, &slot_closed), *acc = slot_value(phase, &slot_acc);
    if (closed == NULL || !PyList_CheckExact(closed) || acc == NULL
        || Py_TYPE(acc) != accumulator_type || !only_host_sums(acc))
        return 0;
    PyObject *lrs = read_lrs(w);
    if (lrs == NULL)
        return PyErr_Occurred() ? -1 : 0;
    int rc = -1;
    PyObject *wall = NULL, *host = NULL, *fresh = NULL, *last = NULL, *steps = NULL,
             *samples = NULL, *start = NULL, *start_host = NULL;
    double now, unread, length;
    Py_ssize_t earlier = PyList_GET_SIZE(closed);
    Py_ssize_t waiting = PyObject_Length(get_slot_borrowed(acc, &slot_pending));
    if (waiting < 0 || read_clock(w, &now) < 0 || (wall = PyObject_CallNoArgs(time_time)) == NULL)
        goto done;
    /* the interval started where the one before it ended: the last closed here, or else the
     * phase's interval_start */
    if (earlier > 0) {
        PyObject *before = PyList_GET_ITEM(closed, earlier - 1);
        if (!PyTuple_CheckExact(before) || PyTuple_GET_SIZE(before) < 1) {
            PyErr_SetString(PyExc_TypeError, "torchwatch: phase.closed holds snapshot tuples");
            goto done;
        }
        start_host = Py_NewRef(PyTuple_GET_ITEM(before, 0));
    }
    else if ((start = get_slot(phase, &slot_interval_start)) == NULL
             || (start_host = PyObject_GetAttr(start, s_host)) == NULL)
        goto done;
    length = now - PyFloat_AsDouble(start_host);
    if (PyErr_Occurred())
        goto done;
    if ((host = get_slot(acc, &slot_host)) == NULL || (fresh = PyDict_New()) == NULL
        || (last = get_slot(w->run, &slot_global_step)) == NULL
        || (steps = get_slot(phase, &slot_steps)) == NULL
        || (samples = get_slot(phase, &slot_samples)) == NULL)
        goto done;
    double wait = PyFloat_AsDouble(get_slot_borrowed(phase, &slot_data_wait_s));
    if (wait == -1.0 && PyErr_Occurred())
        goto done;
    PyObject *entry = Py_BuildValue("(dOOOOdOO)", now, wall, last, steps, samples, wait, lrs,
                                    host);
    if (entry == NULL || PyList_Append(closed, entry) < 0) {
        Py_XDECREF(entry);
        goto done;
    }
    Py_DECREF(entry);
    set_slot(acc, &slot_host, fresh);
    PyObject *due = PyNumber_Add(steps, w->log_every);
    if (due == NULL)
        goto done;
    set_slot(phase, &slot_interval_due, due);
    Py_DECREF(due);
    /* read the closed intervals when due, as close_interval does (READ_SECS, MAX_UNREAD) */
    if (waiting == 0 && earlier == 0) {
        PyObject *since = PyFloat_FromDouble(now);
        if (since == NULL)
            goto done;
        set_slot(phase, &slot_unread_since, since);
        Py_DECREF(since);
    }
    unread = PyFloat_AsDouble(get_slot_borrowed(phase, &slot_unread_since));
    if (unread == -1.0 && PyErr_Occurred())
        goto done;
    if (now - unread + length >= w->read_secs || waiting + earlier + 1 >= w->max_unread) {
        PyObject *read = PyObject_CallMethodNoArgs(phase, s_read_ready);
        if (read == NULL)
            goto done;
        Py_DECREF(read);
    }
    rc = 1;
done:
    Py_DECREF(lrs);
    Py_XDECREF(wall);
    Py_XDECREF(host);
    Py_XDECREF(fresh);
    Py_XDECREF(last);
    Py_XDECREF(steps);
    Py_XDECREF(samples);
    Py_XDECREF(start);
    Py_XDECREF(start_host);
    return rc;
}

/* Phase.end_step(rows, wait) */
static int
end_step(Watched *w, PyObject *rows, double wait)
{
    PyObject *phase = w->phase;
    PyObject *steps = add_to_slot(phase, &slot_steps, one_long);
    if (steps == NULL || add_to_slot(phase, &slot_samples, rows) == NULL)
        return -1;
    Py_INCREF(steps);  /* compared below, after the other slots have changed */
    PyObject *added = add_float_to_slot(phase, &slot_data_wait_s, wait) < 0 ? NULL : steps;
    if (added != NULL && w->is_train)
        added = add_to_slot(w->run, &slot_global_step, one_long);
    PyObject *due = added == NULL ? NULL : get_slot(phase, &slot_interval_due);
    int close = due == NULL ? -1 : PyObject_RichCompareBool(steps, due, Py_GE);
    Py_DECREF(steps);
    Py_XDECREF(due);
    if (close <= 0)
        return close;
    int took = snapshot(w);
    if (took != 0)
        return took < 0 ? -1 : 0;
    PyObject *closed = PyObject_CallMethodNoArgs(phase, s_close_interval);
    if (closed == NULL)
        return -1;
    Py_DECREF(closed);
    return 0;
}

static int
show(Watched *w)
{
    PyObject *done = PyLong_FromSsize_t(w->done);
    if (done == NULL)
        return -1;
    PyObject *args[3] = {w->bar, w->phase, done};
    PyObject *shown = PyObject_Vectorcall(w->show, args, 3, NULL);
    Py_DECREF(done);
    if (shown == NULL)
        return -1;
    Py_DECREF(shown);
    return 0;
}

/* the end of the loop, however it ends: no step open, the bar closed (see steps._close_bar).
 * A loop left inside a step (break, return, an exception) leaves that step to the phase as its
 * open_step, (samples, data wait): Phase.end_open_step counts it once the phase goes on. */
static int
finish(Watched *w)
{
    w->finished = 1;
    if (w->rows != NULL) {
        PyObject *open = Py_BuildValue("(Od)", w->rows, w->wait);
        if (open == NULL)
            return -1;
        set_slot(w->phase, &slot_open_step, open);
        Py_DECREF(open);
        w->done++;
    }
    Py_CLEAR(w->rows);
    set_slot(w->phase, &slot_step_weight, Py_None);
    if (w->bar == Py_None)
        return 0;
    PyObject *done = PyLong_FromSsize_t(w->done);
    if (done == NULL)
        return -1;
    int set = PyObject_SetAttr(w->bar, s_n, done);
    Py_DECREF(done);
    if (set < 0)
        return -1;
    PyObject *closed = PyObject_CallMethodNoArgs(w->bar, s_close);
    if (closed == NULL)
        return -1;
    Py_DECREF(closed);
    return 0;
}

/* an exception on its way out of the loop: finish, and raise it (or what finishing raised) */
static PyObject *
fail(Watched *w)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    if (finish(w) < 0) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        return NULL;
    }
    PyErr_Restore(type, value, traceback);
    return NULL;
}

static PyObject *
watched_next(Watched *w)
{
    if (w->finished)
        return NULL;
    if (w->rows != NULL) {  /* the step of the item handed out last ends here */
        PyObject *rows = w->rows;
        w->rows = NULL;
        set_slot(w->phase, &slot_step_weight, Py_None);
        int rc = end_step(w, rows, w->wait);
        Py_DECREF(rows);
        if (rc < 0)
            return fail(w);
        w->done++;
    }
    double started, now;
    if (read_clock(w, &started) < 0)
        return fail(w);
    PyObject *item = Py_TYPE(w->iterator)->tp_iternext(w->iterator);
    if (item == NULL) {
        if (PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_StopIteration))
                return fail(w);
            PyErr_Clear();
        }
        (void)finish(w);  /* NULL either way: the end, or what finishing raised */
        return NULL;
    }
    if (read_clock(w, &now) < 0)
        goto error;
    if (now >= w->bar_due) {
        w->bar_due = now + w->bar_secs;
        if (show(w) < 0)
            goto error;
    }
    PyObject *rows = w->fixed != Py_None ? Py_NewRef(w->fixed) : rows_of(w, item);
    if (rows == NULL)
        goto error;
    int counted = PyObject_IsTrue(rows);
    if (counted < 0) {
        Py_DECREF(rows);
        goto error;
    }
    if (!counted)  /* `rows or 1.0` weighs tw.log; `rows or 0` counts samples */
        Py_SETREF(rows, Py_NewRef(zero_long));
    set_slot(w->phase, &slot_step_weight, counted ? rows : one_float);
    w->rows = rows;
    w->wait = now - started;
    return item;
error:
    Py_DECREF(item);
    return fail(w);
}

static void
watched_finalize(PyObject *self)
{
    Watched *w = (Watched *)self;
    if (w->finished || w->phase == NULL)
        return;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    if (finish(w) < 0)
        PyErr_WriteUnraisable(self);
    PyErr_Restore(type, value, traceback);
}

static int
watched_traverse(Watched *w, visitproc visit, void *arg)
{
    Py_VISIT(w->phase);
    Py_VISIT(w->run);
    Py_VISIT(w->iterator);
    Py_VISIT(w->clock);
    Py_VISIT(w->fixed);
    Py_VISIT(w->bar);
    Py_VISIT(w->show);
    Py_VISIT(w->first_rows);
    Py_VISIT(w->rows);
    Py_VISIT(w->lr_tags);
    Py_VISIT(w->log_every);
    return 0;
}

static int
watched_clear(Watched *w)
{
    Py_CLEAR(w->phase);
    Py_CLEAR(w->run);
    Py_CLEAR(w->iterator);
    Py_CLEAR(w->clock);
    Py_CLEAR(w->fixed);
    Py_CLEAR(w->bar);
    Py_CLEAR(w->show);
    Py_CLEAR(w->first_rows);
    Py_CLEAR(w->rows);
    Py_CLEAR(w->lr_tags);
    Py_CLEAR(w->log_every);
    return 0;
}

static void
watched_dealloc(PyObject *self)
{
    if (PyObject_CallFinalizerFromDealloc(self) < 0)
        return;  /* resurrected */
    PyObject_GC_UnTrack(self);
    watched_clear((Watched *)self);
    Py_TYPE(self)->tp_free(self);
}

/* lr_tags as run.lr_tags() gives them: a list of (optimizer, tuple of str) */
static int
lr_tags_ok(PyObject *lr_tags)
{
    if (!PyList_CheckExact(lr_tags))
        return 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lr_tags); i++) {
        PyObject *pair = PyList_GET_ITEM(lr_tags, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2
            || !PyTuple_CheckExact(PyTuple_GET_ITEM(pair, 1)))
            return 0;
    }
    return 1;
}

static PyObject *
watched_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *phase, *iterable, *fixed, *bar, *show_bar, *first_rows, *lr_tags;
    double bar_secs, read_secs;
    Py_ssize_t max_unread;
    static char *keywords[] = {"phase", "iterable", "fixed", "bar", "show", "first_rows",
                               "bar_secs", "lr_tags", "read_secs", "max_unread", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOdOdn:Watched", keywords, &phase,
                                     &iterable, &fixed, &bar, &show_bar, &first_rows, &bar_secs,
                                     &lr_tags, &read_secs, &max_unread))
        return NULL;
    if (lr_tags != Py_None && !lr_tags_ok(lr_tags)) {
        PyErr_SetString(PyExc_TypeError,
                        "Watched needs lr_tags as run.lr_tags() gives them, or None");
        return NULL;
    }
    if (phase_type == NULL || Py_TYPE(phase) != phase_type) {
        PyErr_SetString(PyExc_TypeError, "Watched needs a torchwatch Phase (after configure())");
        return NULL;
    }
    PyObject *run = PyObject_GetAttrString(phase, "run");
    if (run == NULL)
        return NULL;
    if (!PyObject_TypeCheck(run, run_type)) {
        Py_DECREF(run);
        PyErr_SetString(PyExc_TypeError, "Watched needs a phase of a torchwatch Run");
        return NULL;
    }
    PyObject *clock = PyObject_GetAttrString(run, "clock");
    PyObject *log_every = PyObject_GetAttr(run, s_log_every);
    PyObject *is_train = PyObject_GetAttrString(phase, "is_train");
    PyObject *iterator = PyObject_GetIter(iterable);
    int train = is_train == NULL ? -1 : PyObject_IsTrue(is_train);
    Py_XDECREF(is_train);
    Watched *w = NULL;
    if (clock != NULL && log_every != NULL && iterator != NULL && train >= 0)
        w = (Watched *)type->tp_alloc(type, 0);
    if (w == NULL) {
        Py_DECREF(run);
        Py_XDECREF(clock);
        Py_XDECREF(log_every);
        Py_XDECREF(iterator);
        return NULL;
    }
    w->phase = Py_NewRef(phase);
    w->run = run;
    w->iterator = iterator;
    w->clock = clock;
    w->fixed = Py_NewRef(fixed);
    w->bar = Py_NewRef(bar);
    w->show = Py_NewRef(show_bar);
    w->first_rows = Py_NewRef(first_rows);
    w->lr_tags = Py_NewRef(lr_tags);
    w->log_every = log_every;
    w->bar_secs = bar_secs;
    w->read_secs = read_secs;
    w->max_unread = max_unread;
    w->bar_due = bar == Py_None ? Py_HUGE_VAL : 0.0;  /* the clock is read anyway: no counter */
    w->is_train = train;
    w->monotonic = clock == perf_counter;
    return (PyObject *)w;
}

static PyTypeObject WatchedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "torchwatch._speedups.Watched",
    .tp_doc = PyDoc_STR(
        "Watched(phase, iterable, fixed, bar, show, first_rows, bar_secs, lr_tags, read_secs,"
        " max_unread)\n--\n\n"
        "steps._watched, compiled: the iterator tw.steps returns inside a phase."),
    .tp_basicsize = sizeof(Watched),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = watched_new,
    .tp_dealloc = watched_dealloc,
    .tp_finalize = watched_finalize,
    .tp_traverse = (traverseproc)watched_traverse,
    .tp_clear = (inquiry)watched_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)watched_next,
};

/* ---- TensorBoard's record framing ------------------------------------------------------------ */

/* An event file is a sequence of records: the data's length (uint64, little-endian), the masked
 * CRC-32C of those 8 bytes, the data, the masked CRC-32C of the data. TensorBoard's RecordWriter
 * computes each CRC in a pure-Python loop, about 14 µs for a 120-byte scalar event; this is the
 * same framing, byte for byte (tests/test_compiled.py compares the two), a table lookup per byte. */
static uint32_t crc32c_table[256];

static void
crc32c_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t crc = i;
        for (int bit = 0; bit < 8; bit++)  /* Castagnoli, reflected: 0x82F63B78 */
            crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        crc32c_table[i] = crc;
    }
}

static uint32_t
masked_crc32c(const unsigned char *byte, Py_ssize_t size)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < size; i++)
        crc = crc32c_table[(crc ^ byte[i]) & 0xFFu] ^ (crc >> 8);
    crc ^= 0xFFFFFFFFu;
    return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

static void
put_le(unsigned char *out, uint64_t value, int size)
{
    for (int i = 0; i < size; i++)
        out[i] = (unsigned char)(value >> (8 * i));
}

/* records(list of bytes) -> bytes: each item framed as a record, all of them concatenated */
static PyObject *
records(PyObject *module, PyObject *items)
{
    if (!PyList_CheckExact(items)) {
        PyErr_SetString(PyExc_TypeError, "records() takes a list of bytes");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(items), total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyBytes_CheckExact(item)) {
            PyErr_Format(PyExc_TypeError, "records() takes a list of bytes, got a %s in it",
                         Py_TYPE(item)->tp_name);
            return NULL;
        }
        total += 16 + PyBytes_GET_SIZE(item);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        return NULL;
    unsigned char *at = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        Py_ssize_t size = PyBytes_GET_SIZE(item);
        put_le(at, (uint64_t)size, 8);
        put_le(at + 8, masked_crc32c(at, 8), 4);
        memcpy(at + 12, PyBytes_AS_STRING(item), (size_t)size);
        put_le(at + 12 + size, masked_crc32c(at + 12, size), 4);
        at += 16 + size;
    }
    return out;
}

/* ---- the module ----------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"log", (PyCFunction)(void (*)(void))hot_log, METH_FASTCALL | METH_KEYWORDS,
     PyDoc_STR("log($module, value=None, /, *, n=None, **metrics)\n--\n\n"
               "Record metrics into the innermost active phase; a positional value is named "
               "``loss``.")},
    {"configure", configure, METH_VARARGS,
     PyDoc_STR("configure(slow_log, active, tensor, complex_dtypes, host_dtypes, "
               "fold_limit, phase_type, accumulator_type, run_type)\n--\n\n"
               "What log() and Watched need: the Python tw.log, the active phases, torch.Tensor, "
               "the complex dtypes, the dtypes read on the host ((float32, float64, int64, int32, "
               "int16, int8, uint8, bool)), the longest list log() may append to, and the three "
               "classes whose slots they read.")},
    {"direct", direct, METH_NOARGS,
     PyDoc_STR("direct($module, /)\n--\n\n"
               "The torch.Tensor attributes read through their getters, not the generic "
               "lookup (configure() finds them).")},
    {"records", records, METH_O,
     PyDoc_STR("records($module, items, /)\n--\n\n"
               "The bytes of a list of bytes as TensorBoard event-file records, concatenated: "
               "what tensorboard's RecordWriter writes for each, one after the other.")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "torchwatch._speedups",
    "torchwatch's per-step hot path and TensorBoard record framing, compiled (see _speedups.c)", -1, methods,
};

static int
intern_all(void)
{
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    INTERN(s_ndim, "ndim");
    INTERN(s_dtype, "dtype");
    INTERN(s_requires_grad, "requires_grad");
    INTERN(s_version, "_version");
    INTERN(s_is_inference, "is_inference");
    INTERN(s_detach, "detach");
    INTERN(s_shape, "shape");
    INTERN(s_log_one, "_log_one");
    INTERN(s_close_interval, "close_interval");
    INTERN(s_loss, "loss");
    INTERN(s_close, "close");
    INTERN(s_is_cpu, "is_cpu");
    INTERN(s_is_neg, "is_neg");
    INTERN(s_data_ptr, "data_ptr");
    INTERN(s_n, "n");
    INTERN(s_host, "host");
    INTERN(s_lr, "lr");
    INTERN(s_read_ready, "read_ready");
    INTERN(s_log_every, "log_every");
    INTERN(s_param_groups, "param_groups");
#undef INTERN
    one_float = PyFloat_FromDouble(1.0);
    one_long = PyLong_FromLong(1);
    zero_long = PyLong_FromLong(0);
    return (one_float && one_long && zero_long) ? 0 : -1;
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (intern_all() < 0 || PyType_Ready(&WatchedType) < 0)
        return NULL;
    crc32c_init();
    PyObject *time_module = PyImport_ImportModule("time");
    if (time_module == NULL)
        return NULL;
    perf_counter = PyObject_GetAttrString(time_module, "perf_counter");
    time_time = PyObject_GetAttrString(time_module, "time");
    Py_DECREF(time_module);
    if (perf_counter == NULL || time_time == NULL)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    Py_INCREF(&WatchedType);
    if (PyModule_AddObject(module, "Watched", (PyObject *)&WatchedType) < 0) {
        Py_DECREF(&WatchedType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
