/*
 * hsmkit example plugin in plain C: a symmetric-key HSM holding one HMAC-SHA256 key in memory.
 *
 * Settings: registration_id (required). The key arrives through import_key and is wiped on
 * destroy. Build:  cc -std=c11 -fPIC -shared -I hsm-api/include example_symmetric.c -lcrypto
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "hsm_api.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_ID 128
#define MAX_KEY 64

struct HsmInstance {
    char registration_id[MAX_ID + 1];
    unsigned char key[MAX_KEY];
    size_t key_len;
    char last_error[256];
};

static void set_error(HsmInstance *inst, const char *message) {
    snprintf(inst->last_error, sizeof inst->last_error, "%s", message);
}

static HsmStatus put_buffer(HsmBuffer *out, const void *data, size_t len) {
    out->data = NULL;
    out->len = 0;
    out->reserved = 0;
    if (len == 0) return HSM_OK;
    out->data = malloc(len);
    if (!out->data) return HSM_ERR_INTERNAL;
    memcpy(out->data, data, len);
    out->len = len;
    return HSM_OK;
}

static int slice_equals(HsmSlice s, const char *text) {
    size_t n = strlen(text);
    return s.len == n && s.ptr && memcmp(s.ptr, text, n) == 0;
}

static HsmStatus example_create(const HsmKeyValue *config, size_t config_len,
                                HsmInstance **out_instance, HsmBuffer *out_error) {
    const char *missing = "missing required setting `registration_id`";
    if (out_error) { out_error->data = NULL; out_error->len = 0; out_error->reserved = 0; }
    if (!out_instance || (!config && config_len)) return HSM_ERR_INVALID_ARGUMENT;
    HsmInstance *inst = calloc(1, sizeof *inst);
    if (!inst) return HSM_ERR_INTERNAL;
    for (size_t i = 0; i < config_len; i++) {
        if (slice_equals(config[i].key, "registration_id")) {
            if (config[i].value.len == 0 || config[i].value.len > MAX_ID || !config[i].value.ptr) {
                free(inst);
                const char *m = "registration_id must be 1 to 128 bytes";
                if (out_error) put_buffer(out_error, m, strlen(m));
                return HSM_ERR_INVALID_ARGUMENT;
            }
            memcpy(inst->registration_id, config[i].value.ptr, config[i].value.len);
            inst->registration_id[config[i].value.len] = '\0';
        }
    }
    if (inst->registration_id[0] == '\0') {
        free(inst);
        if (out_error) put_buffer(out_error, missing, strlen(missing));
        return HSM_ERR_INVALID_ARGUMENT;
    }
    *out_instance = inst;
    return HSM_OK;
}

static void example_destroy(HsmInstance *inst) {
    if (!inst) return;
    OPENSSL_cleanse(inst, sizeof *inst);
    free(inst);
}

static HsmStatus example_last_error(HsmInstance *inst, HsmBuffer *out) {
    if (!inst || !out) return HSM_ERR_INVALID_ARGUMENT;
    return put_buffer(out, inst->last_error, strlen(inst->last_error));
}

static void example_release_buffer(HsmBuffer *buffer) {
    if (!buffer || !buffer->data) return;
    OPENSSL_cleanse(buffer->data, buffer->len);
    free(buffer->data);
    buffer->data = NULL;
    buffer->len = 0;
}

static HsmStatus example_get_registration_id(HsmInstance *inst, HsmBuffer *out) {
    if (!inst || !out) return HSM_ERR_INVALID_ARGUMENT;
    return put_buffer(out, inst->registration_id, strlen(inst->registration_id));
}

static HsmStatus example_sign(HsmInstance *inst, HsmSlice data, HsmBuffer *out) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (!inst || !out) return HSM_ERR_INVALID_ARGUMENT;
    out->data = NULL; out->len = 0; out->reserved = 0;
    if (!data.ptr && data.len) { set_error(inst, "sign: NULL data with a length"); return HSM_ERR_INVALID_ARGUMENT; }
    if (inst->key_len == 0) { set_error(inst, "no key imported yet"); return HSM_ERR_NOT_FOUND; }
    static const unsigned char empty = 0;
    if (!HMAC(EVP_sha256(), inst->key, (int)inst->key_len, data.len ? data.ptr : &empty, data.len,
              mac, &mac_len)) {
        set_error(inst, "OpenSSL HMAC failed");
        return HSM_ERR_INTERNAL;
    }
    HsmStatus s = put_buffer(out, mac, mac_len);
    OPENSSL_cleanse(mac, sizeof mac);
    return s;
}

static HsmStatus example_import_key(HsmInstance *inst, HsmSlice registration_id, HsmSlice key) {
    if (!inst) return HSM_ERR_INVALID_ARGUMENT;
    if (!key.ptr || key.len < 16 || key.len > MAX_KEY) {
        set_error(inst, "import_key: keys must be 16 to 64 bytes");
        return HSM_ERR_INVALID_ARGUMENT;
    }
    if (registration_id.len > MAX_ID || (!registration_id.ptr && registration_id.len)) {
        set_error(inst, "import_key: registration id must be at most 128 bytes");
        return HSM_ERR_INVALID_ARGUMENT;
    }
    if (registration_id.len) {
        memcpy(inst->registration_id, registration_id.ptr, registration_id.len);
        inst->registration_id[registration_id.len] = '\0';
    }
    OPENSSL_cleanse(inst->key, sizeof inst->key);
    memcpy(inst->key, key.ptr, key.len);
    inst->key_len = key.len;
    return HSM_OK;
}

static const HsmSymmetricKeyTable SYMMETRIC_TABLE = {
    .header = { HSM_ABI_MAJOR, HSM_ABI_MINOR, sizeof(HsmSymmetricKeyTable) },
    .get_registration_id = example_get_registration_id,
    .sign = example_sign,
    .import_key = example_import_key,
};

static const HsmPluginTable PLUGIN_TABLE = {
    .header = { HSM_ABI_MAJOR, HSM_ABI_MINOR, sizeof(HsmPluginTable) },
    .name = "c-example",
    .version = "1.0.0",
    .vendor = "hsmkit examples",
    .description = "Symmetric-key plugin written in plain C (OpenSSL HMAC, key in memory)",
    .capabilities = HSM_CAP_SYMMETRIC_KEY,
    .threading = HSM_THREADING_SERIALIZED,
    .create = example_create,
    .destroy = example_destroy,
    .last_error = example_last_error,
    .release_buffer = example_release_buffer,
    .tpm = NULL,
    .x509 = NULL,
    .symmetric_key = &SYMMETRIC_TABLE,
};

EXPORT HsmStatus hsm_plugin_entry(uint16_t host_major, uint16_t host_minor,
                                  const HsmHostApi *host, const HsmPluginTable **out_table) {
    (void)host_minor;
    if (!out_table) return HSM_ERR_INVALID_ARGUMENT;
    *out_table = &PLUGIN_TABLE;
    if (host && host->header.abi_major == HSM_ABI_MAJOR && host->log) {
        const char *hello = "c-example plugin loaded";
        HsmSlice s = { (const uint8_t *)hello, strlen(hello) };
        host->log(HSM_LOG_DEBUG, s);
    }
    return host_major == HSM_ABI_MAJOR ? HSM_OK : HSM_ERR_ABI_MISMATCH;
}
