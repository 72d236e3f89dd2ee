#ifndef QLAB_CJANSSON_SHIM_H
#define QLAB_CJANSSON_SHIM_H
#include <jansson.h>

/* jansson's reference counting and type tests are macros or inline
   functions; these wrappers give Swift a stable way to call them. */
static inline void qlab_json_decref(json_t *json) { json_decref(json); }
static inline json_t *qlab_json_incref(json_t *json) { return json_incref(json); }
static inline int qlab_json_typeof(const json_t *json) { return (int)json_typeof(json); }
static inline int qlab_json_error_code(const json_error_t *e) { return (int)json_error_code(e); }
#endif
