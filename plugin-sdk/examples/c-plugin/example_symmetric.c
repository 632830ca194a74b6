/*
 * hsmkit example plugin in plain C: a symmetric-key HSM holding one HMAC-SHA256 key, kept 0600
 * under state_dir so that a key imported by `hsmkit import-key` is there for `hsmkit provision`.
 *
 * Settings: registration_id (required), declared in PLUGIN_TABLE.settings (ABI 1.1); create
 * refuses any other key but state_dir with HSM_ERR_INVALID_ARGUMENT naming it, as the header
 * requires (the Rust SDK does this itself; in C it is done by hand, below). The key arrives
 * through import_key and is wiped on destroy. Build:  cc -std=c11 -fPIC -shared -I hsm-api/include example_symmetric.c -lcrypto
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "hsm_api.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_ID 128
#define MAX_KEY 64
#define MAX_PATH 4096
#define KEY_FILE "c-example.key"

struct HsmInstance {
    char registration_id[MAX_ID + 1];
    unsigned char key[MAX_KEY];
    size_t key_len;
    char state_dir[MAX_PATH];   /* empty when the host passed none */
    char key_path[MAX_PATH];    /* state_dir/c-example.key */
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

/* Every key create reads, one line each; hosts show them (`hsmkit plugins info c-example`).
 * state_dir is always passed and always valid, so it is not declared. */
static const HsmSetting SETTINGS[] = {
    { .name = "registration_id", .description = "DPS registration id of this device (1 to 128 bytes)", .required = 1 },
};
#define SETTINGS_LEN (sizeof SETTINGS / sizeof SETTINGS[0])

/* Whether `key` is state_dir or a declared setting. */
static int known_setting(HsmSlice key) {
    if (slice_equals(key, "state_dir")) return 1;
    for (size_t i = 0; i < SETTINGS_LEN; i++) {
        if (slice_equals(key, SETTINGS[i].name)) return 1;
    }
    return 0;
}

/* "unknown setting `KEY`; valid settings: registration_id, state_dir" (never the value). */
static void unknown_setting_message(HsmBuffer *out_error, HsmSlice key) {
    char message[512];
    int key_len = key.len > 128 ? 128 : (int)key.len;
    int n = snprintf(message, sizeof message, "unknown setting `%.*s`; valid settings: ",
                     key_len, key.ptr ? (const char *)key.ptr : "");
    for (size_t i = 0; i < SETTINGS_LEN && n > 0 && (size_t)n < sizeof message; i++) {
        n += snprintf(message + n, sizeof message - (size_t)n, "%s, ", SETTINGS[i].name);
    }
    if (n > 0 && (size_t)n < sizeof message) {
        n += snprintf(message + n, sizeof message - (size_t)n, "state_dir");
    }
    if (n > 0) put_buffer(out_error, message, strlen(message));
}

/* The key must outlive the process: `hsmkit import-key` stores it in one process and
 * `hsmkit provision` signs with it in another, maybe after a reboot. A key kept only in memory
 * passes every single-process test and then fails to provision. So import_key writes it to
 * state_dir/c-example.key (0600, atomically) and create reads it back. A host that passes no
 * state_dir gets a key that lives as long as the instance. */

/* Reads the key an earlier process stored. 0: read, or none stored yet; -1: the file is not a
 * regular 0600 file of this user with 16 to 64 bytes (refused rather than trusted). */
static int load_key(HsmInstance *inst) {
    int fd = open(inst->key_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
        (st.st_mode & 077) != 0 || st.st_size < 16 || st.st_size > MAX_KEY) {
        close(fd);
        return -1;
    }
    size_t len = (size_t)st.st_size, done = 0;
    while (done < len) {
        ssize_t n = read(fd, inst->key + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            close(fd);
            OPENSSL_cleanse(inst->key, sizeof inst->key);
            return -1;
        }
        done += (size_t)n;
    }
    close(fd);
    inst->key_len = len;
    return 0;
}

/* Writes the key atomically: a new 0600 file beside it, fsync, rename over the old one, fsync
 * the folder. A reader sees the old key or the new one, never part of one. 0 or -1. */
static int store_key(HsmInstance *inst, const unsigned char *key, size_t len) {
    char tmp[MAX_PATH + 8];
    if (snprintf(tmp, sizeof tmp, "%s.new", inst->key_path) >= (int)sizeof tmp) return -1;
    if (mkdir(inst->state_dir, 0700) != 0 && errno != EEXIST) return -1;
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, key + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += (size_t)n;
    }
    if (done != len || fsync(fd) != 0) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    if (close(fd) != 0 || rename(tmp, inst->key_path) != 0) {
        unlink(tmp);
        return -1;
    }
    int dir = open(inst->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
        fsync(dir);
        close(dir);
    }
    return 0;
}

/* Takes state_dir from the settings and reads the stored key, if any. HSM_OK or an error with
 * its message in out_error. */
static HsmStatus open_state(HsmInstance *inst, const HsmKeyValue *config, size_t config_len,
                            HsmBuffer *out_error) {
    for (size_t i = 0; i < config_len; i++) {
        if (!slice_equals(config[i].key, "state_dir")) continue;
        HsmSlice v = config[i].value;
        int n = snprintf(inst->key_path, sizeof inst->key_path, "%.*s/%s", (int)v.len,
                         v.ptr ? (const char *)v.ptr : "", KEY_FILE);
        if (v.len == 0 || !v.ptr || v.len >= sizeof inst->state_dir || n < 0 ||
            (size_t)n >= sizeof inst->key_path) {
            const char *m = "state_dir must be a folder path of 1 to 4000 bytes";
            if (out_error) put_buffer(out_error, m, strlen(m));
            return HSM_ERR_INVALID_ARGUMENT;
        }
        memcpy(inst->state_dir, v.ptr, v.len);
        inst->state_dir[v.len] = '\0';
    }
    if (inst->key_path[0] && load_key(inst) != 0) {
        char m[MAX_PATH + 96];
        snprintf(m, sizeof m, "the stored key %s is not a 0600 file of this user with 16 to 64 bytes",
                 inst->key_path);
        if (out_error) put_buffer(out_error, m, strlen(m));
        return HSM_ERR_DEVICE;
    }
    return HSM_OK;
}

static HsmStatus example_create(const HsmKeyValue *config, size_t config_len,
                                HsmInstance **out_instance, HsmBuffer *out_error) {
    const char *missing = "missing required setting `registration_id`";
    if (out_error) { out_error->data = NULL; out_error->len = 0; out_error->reserved = 0; }
    if (!out_instance || (!config && config_len)) return HSM_ERR_INVALID_ARGUMENT;
    for (size_t i = 0; i < config_len; i++) {
        if (!known_setting(config[i].key)) {
            if (out_error) unknown_setting_message(out_error, config[i].key);
            return HSM_ERR_INVALID_ARGUMENT;
        }
    }
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
    HsmStatus state = open_state(inst, config, config_len, out_error);
    if (state != HSM_OK) {
        OPENSSL_cleanse(inst, sizeof *inst);
        free(inst);
        return state;
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
    /* Stored first: the new key counts only once it will be there for the next process. */
    if (inst->key_path[0] && store_key(inst, key.ptr, key.len) != 0) {
        /* Cut to last_error's size if the path is long. */
        if (snprintf(inst->last_error, sizeof inst->last_error,
                     "import_key: cannot store the key in %s: %s", inst->key_path,
                     strerror(errno)) < 0) {
            set_error(inst, "import_key: cannot store the key under state_dir");
        }
        return HSM_ERR_DEVICE;
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
    .description = "Symmetric-key plugin written in plain C (OpenSSL HMAC, key kept 0600 under state_dir)",
    .capabilities = HSM_CAP_SYMMETRIC_KEY,
    .threading = HSM_THREADING_SERIALIZED,
    .create = example_create,
    .destroy = example_destroy,
    .last_error = example_last_error,
    .release_buffer = example_release_buffer,
    .tpm = NULL,
    .x509 = NULL,
    .symmetric_key = &SYMMETRIC_TABLE,
    .settings = SETTINGS,
    .settings_len = SETTINGS_LEN,
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
