// libcurl for the HTTP(S) and S3 stores (Sources/Stores/HTTP, Sources/Stores/S3).
//
// `curl_easy_setopt` and `curl_easy_getinfo` are variadic C functions, which Swift cannot call;
// the inline wrappers below fix one argument type each. `curl_global_init`'s flag macros are
// wrapped too, so Swift never spells their values.
#ifndef CCURL_H
#define CCURL_H

#include <curl/curl.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The signature of CURLOPT_WRITEFUNCTION and CURLOPT_HEADERFUNCTION callbacks.
typedef size_t (*ccurl_data_callback)(char *data, size_t size, size_t count, void *context);

/// `curl_global_init(CURL_GLOBAL_DEFAULT)`: call once per process before any handle exists.
static inline CURLcode ccurl_global_init(void) { return curl_global_init(CURL_GLOBAL_DEFAULT); }

static inline CURLcode ccurl_setopt_long(CURL *handle, CURLoption option, long value) {
  return curl_easy_setopt(handle, option, value);
}

static inline CURLcode ccurl_setopt_off_t(CURL *handle, CURLoption option, curl_off_t value) {
  return curl_easy_setopt(handle, option, value);
}

/// A string option: libcurl copies it (CURLOPT_URL, CURLOPT_RANGE, CURLOPT_USERPWD, ...).
static inline CURLcode ccurl_setopt_string(CURL *handle, CURLoption option, const char *value) {
  return curl_easy_setopt(handle, option, value);
}

/// A pointer option that libcurl keeps, not copies (CURLOPT_WRITEDATA, CURLOPT_HTTPHEADER,
/// CURLOPT_ERRORBUFFER): it must stay valid until the transfer ends.
static inline CURLcode ccurl_setopt_pointer(CURL *handle, CURLoption option, void *value) {
  return curl_easy_setopt(handle, option, value);
}

static inline CURLcode ccurl_setopt_callback(CURL *handle, CURLoption option, ccurl_data_callback value) {
  return curl_easy_setopt(handle, option, value);
}

static inline CURLcode ccurl_getinfo_long(CURL *handle, CURLINFO info, long *value) {
  return curl_easy_getinfo(handle, info, value);
}

/// CURL_ERROR_SIZE, the length CURLOPT_ERRORBUFFER's buffer must have.
static inline int ccurl_error_size(void) { return CURL_ERROR_SIZE; }

#ifdef __cplusplus
}
#endif

#endif  // CCURL_H
