/*
 * ca_check.c - zjuchat_ca_file_check: whether a CA bundle can verify
 * anything, read the way the TLS context reads it (h1_conn.c tls_ctx, and
 * libcurl's CURLOPT_CAINFO through the same OpenSSL loader), so that a
 * caller can refuse a bad file when it starts instead of failing every
 * call over TLS later.
 */
#include "internal.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

zjuchat_code zjuchat_ca_file_check(const char *path, zjuchat_error *err)
{
    if (!path || !*path) {
        zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                           "no CA file named");
        return ZJUCHAT_ERR_INVALID;
    }
    /* fopen first: OpenSSL's own message for an unreadable file is
     * "system lib", where strerror says which. */
    FILE *f = fopen(path, "r");
    if (!f) {
        zjuchat__error_set(err, ZJUCHAT_ERR_CONFIG, ZJUCHAT_DETAIL_NONE,
                           "cannot be read: %s", strerror(errno));
        return ZJUCHAT_ERR_CONFIG;
    }
    struct stat st;
    int dir = fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode);
    fclose(f);
    if (dir) { /* fopen opens one; OpenSSL's reason would be "no certificate" */
        zjuchat__error_set(err, ZJUCHAT_ERR_CONFIG, ZJUCHAT_DETAIL_NONE,
                           "is a directory, not a file");
        return ZJUCHAT_ERR_CONFIG;
    }
    X509_STORE *store = X509_STORE_new();
    if (!store) {
        zjuchat__error_set(err, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE, "out of memory");
        return ZJUCHAT_ERR_NOMEM;
    }
    ERR_clear_error();
    int ok = X509_STORE_load_file(store, path);
    int certs = 0;
    if (ok) {
        STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(store);
        for (int i = 0; i < sk_X509_OBJECT_num(objs); i++)
            certs += X509_OBJECT_get_type(sk_X509_OBJECT_value(objs, i)) == X509_LU_X509;
    }
    zjuchat_code code = ZJUCHAT_OK;
    if (!ok || certs == 0) {
        /* The first error is the loader's reason ("no certificate or crl
         * found", "bad base64 decode"); it never holds a secret. */
        unsigned long e = ERR_peek_error();
        const char *why = e ? ERR_reason_error_string(e) : NULL;
        zjuchat__error_set(err, ZJUCHAT_ERR_CONFIG, ZJUCHAT_DETAIL_NONE,
                           "holds no certificate OpenSSL can use (%s)",
                           why ? why : "no certificate in it");
        code = ZJUCHAT_ERR_CONFIG;
    }
    ERR_clear_error();
    X509_STORE_free(store);
    return code;
}
