/*
 * hsmkit HSM plugin ABI.
 *
 * A plugin is a shared library exporting hsm_plugin_entry (below). Every table starts with an
 * HsmTableHeader; tables are append-only within a major version, so check struct_size before
 * reading an entry a smaller table may lack. Output buffers are allocated by the plugin and
 * handed back through HsmPluginTable.release_buffer. Never let a C++ exception or a longjmp
 * cross these functions.
 */

#ifndef HSM_API_H
#define HSM_API_H

/* Generated from hsm-api/src by cbindgen (hsm-api/tests/header.rs). Do not edit. */

#include <stddef.h>
#include <stdint.h>

/* Opaque plugin instance: only the plugin knows what is behind it. */
typedef struct HsmInstance HsmInstance;

/**
 * ABI major version spoken by this crate. A plugin with another major is refused.
 */
#define HSM_ABI_MAJOR 1

/**
 * ABI minor version spoken by this crate. Newer minors only append table entries.
 *
 * - 1.0: the plugin, TPM, X.509 and symmetric-key tables.
 * - 1.1: `HsmPluginTable.settings` and `settings_len` appended (the settings `create`
 *   accepts; unknown keys are refused).
 * - 1.2: `HsmPluginTable.operational_key` appended (an [`HsmOperationalKeyTable`] or NULL:
 *   a P-256 key made inside the HSM by label, its public key, digest signing and the issued
 *   chain beside it).
 */
#define HSM_ABI_MINOR 2

/**
 * Capability bit: the plugin has a TPM table.
 */
#define HSM_CAP_TPM (1 << 0)

/**
 * Capability bit: the plugin has an X.509 table.
 */
#define HSM_CAP_X509 (1 << 1)

/**
 * Capability bit: the plugin has a symmetric-key table.
 */
#define HSM_CAP_SYMMETRIC_KEY (1 << 2)

/**
 * Threading: calls on one instance must be serialized by the host (different instances may
 * still be used from different threads at the same time).
 */
#define HSM_THREADING_SERIALIZED 0

/**
 * Threading: one instance may be called from several threads at once.
 */
#define HSM_THREADING_CONCURRENT 1

/**
 * Log level for [`crate::HsmHostApi::log`]: error.
 */
#define HSM_LOG_ERROR 1

/**
 * Log level: warning.
 */
#define HSM_LOG_WARN 2

/**
 * Log level: information.
 */
#define HSM_LOG_INFO 3

/**
 * Log level: debug.
 */
#define HSM_LOG_DEBUG 4

/**
 * Log level: trace.
 */
#define HSM_LOG_TRACE 5

/**
 * X.509 signature: ECDSA P-256 over a SHA-256 digest (32-byte input). Output: the DER
 * `ECDSA-Sig-Value` (as used by TLS and X.509), not raw r||s.
 */
#define HSM_SIGN_ECDSA_P256_SHA256 1

/**
 * X.509 signature: ECDSA P-384 over a SHA-384 digest (48-byte input). Output: DER.
 */
#define HSM_SIGN_ECDSA_P384_SHA384 2

/**
 * X.509 signature: RSA PKCS#1 v1.5 over a SHA-256 digest (32-byte input).
 */
#define HSM_SIGN_RSA_PKCS1_SHA256 3

/**
 * X.509 signature: RSA-PSS (MGF1-SHA256, salt length 32) over a SHA-256 digest.
 */
#define HSM_SIGN_RSA_PSS_SHA256 4

/**
 * Result of every plugin call. `HSM_OK` (0) is success; anything else is an error whose
 * message can be read with `last_error`. Unknown codes must be treated as `HSM_ERR_INTERNAL`.
 */
typedef int32_t HsmStatus;

/**
 * First member of every table: lets a reader of another version know what it holds.
 */
typedef struct HsmTableHeader {
  /**
   * ABI major version the table was built for.
   */
  uint16_t abi_major;
  /**
   * ABI minor version the table was built for.
   */
  uint16_t abi_minor;
  /**
   * `sizeof` the table as its author compiled it; entries beyond it do not exist.
   */
  uint32_t struct_size;
} HsmTableHeader;

/**
 * Pointer to a NUL-terminated static UTF-8 string owned by the plugin.
 */
typedef const char *HsmStaticStr;

/**
 * A borrowed run of bytes passed into a plugin. `ptr` may be NULL only when `len` is 0.
 */
typedef struct HsmSlice {
  /**
   * First byte, or NULL for an empty slice.
   */
  const uint8_t *ptr;
  /**
   * Number of bytes.
   */
  size_t len;
} HsmSlice;

/**
 * One configuration setting: UTF-8 key and value, both borrowed for the call.
 */
typedef struct HsmKeyValue {
  /**
   * Setting name, for example `state_dir` or `registration_id`.
   */
  struct HsmSlice key;
  /**
   * Setting value.
   */
  struct HsmSlice value;
} HsmKeyValue;

/**
 * A buffer allocated by a plugin and owned by the caller until it hands it back through
 * [`HsmPluginTable::release_buffer`]. An empty buffer has a NULL `data` (and `len` 0).
 *
 * Output rules for every `out_*` buffer of every table:
 * - The host passes a pointer to an empty buffer (all fields 0); the plugin never reads
 *   what it points at, only writes it.
 * - On `HSM_OK` the plugin writes the output.
 * - On any error the plugin leaves the buffer empty, so that a host never sees half an
 *   output. (hsmkit still releases a non-empty buffer a failed call left behind.)
 * - Interface calls are never given a NULL output pointer by hsmkit; a plugin answers one
 *   with an error (`HSM_ERR_INVALID_ARGUMENT`), never a crash. Only `create`'s `out_error`
 *   may legitimately be NULL.
 */
typedef struct HsmBuffer {
  /**
   * Plugin-allocated bytes, or NULL.
   */
  uint8_t *data;
  /**
   * Number of valid bytes.
   */
  size_t len;
  /**
   * Plugin-private word (for example an allocation capacity); the host never reads it.
   */
  size_t reserved;
} HsmBuffer;

/**
 * TPM attestation as DPS uses it.
 */
typedef struct HsmTpmTable {
  /**
   * Version and size of this table.
   */
  struct HsmTableHeader header;
  /**
   * Endorsement key as a marshalled `TPM2B_PUBLIC` (2-byte big-endian size + TPMT_PUBLIC).
   * Stable for the life of the device.
   */
  HsmStatus (*get_endorsement_key)(HsmInstance *instance, struct HsmBuffer *out_key);
  /**
   * Storage root key as a marshalled `TPM2B_PUBLIC`.
   */
  HsmStatus (*get_storage_root_key)(HsmInstance *instance, struct HsmBuffer *out_key);
  /**
   * Activates and stores the identity key from a DPS `authenticationKey` blob
   * (credential blob, EK-encrypted secret, duplicate, SRK-encrypted seed, public).
   * A later call replaces the key.
   */
  HsmStatus (*activate_identity_key)(HsmInstance *instance, struct HsmSlice blob);
  /**
   * HMAC-SHA256 of `data` with the identity key (32 bytes out). `HSM_ERR_INVALID_STATE`
   * before any identity key was activated.
   */
  HsmStatus (*sign_with_identity)(HsmInstance *instance,
                                  struct HsmSlice data,
                                  struct HsmBuffer *out_signature);
} HsmTpmTable;

/**
 * X.509 attestation: a certificate chain and a device key that signs in place.
 */
typedef struct HsmX509Table {
  /**
   * Version and size of this table.
   */
  struct HsmTableHeader header;
  /**
   * Certificate chain as PEM, leaf first (UTF-8, no terminating NUL counted in `len`).
   */
  HsmStatus (*get_certificate_chain)(HsmInstance *instance, struct HsmBuffer *out_pem);
  /**
   * Common name of the leaf: the DPS registration id.
   */
  HsmStatus (*get_common_name)(HsmInstance *instance, struct HsmBuffer *out_name);
  /**
   * Signs `digest` with the leaf's private key using `algorithm` (`HSM_SIGN_*`); the
   * signature is DER for ECDSA and the raw modulus-sized block for RSA.
   */
  HsmStatus (*sign_digest)(HsmInstance *instance,
                           uint32_t algorithm,
                           struct HsmSlice digest,
                           struct HsmBuffer *out_signature);
  /**
   * Exports the leaf private key as PKCS#8 PEM where the backend and its configuration
   * allow it; `HSM_ERR_NOT_SUPPORTED` otherwise (the default everywhere).
   */
  HsmStatus (*export_private_key)(HsmInstance *instance, struct HsmBuffer *out_pem);
} HsmX509Table;

/**
 * Symmetric-key attestation: an HMAC key held inside the plugin.
 */
typedef struct HsmSymmetricKeyTable {
  /**
   * Version and size of this table.
   */
  struct HsmTableHeader header;
  /**
   * The DPS registration id this key belongs to (UTF-8).
   */
  HsmStatus (*get_registration_id)(HsmInstance *instance, struct HsmBuffer *out_id);
  /**
   * HMAC-SHA256 of `data` with the held key (32 bytes out). `HSM_ERR_NOT_FOUND` when no
   * key is held yet.
   */
  HsmStatus (*sign)(HsmInstance *instance, struct HsmSlice data, struct HsmBuffer *out_signature);
  /**
   * Stores `key` (raw bytes, not base64) as the held key, replacing any previous one, for
   * `registration_id` (empty = keep the current one). The plugin copies both.
   */
  HsmStatus (*import_key)(HsmInstance *instance,
                          struct HsmSlice registration_id,
                          struct HsmSlice key);
} HsmSymmetricKeyTable;

/**
 * ABI 1.1: one setting a plugin's `create` accepts, as the plugin declares it in
 * [`HsmPluginTable::settings`]. Static for the life of the process.
 */
typedef struct HsmSetting {
  /**
   * The key, as passed to `create` (`tcti`, `registration_id`...): non-empty ASCII letters,
   * digits and `_`, `-` or `.`.
   */
  HsmStaticStr name;
  /**
   * What it is, on one line (no line breaks), with its default when it has one.
   */
  HsmStaticStr description;
  /**
   * 1 when `create` refuses to start without it, 0 when it is optional.
   */
  uint32_t required;
} HsmSetting;

/**
 * ABI 1.2: an operational key, a P-256 key pair made and kept inside the HSM under a label,
 * that signs the CSR for a certificate DPS issues during provisioning and then authenticates
 * the device to IoT Hub; and the issued chain, kept beside it. The private key never leaves
 * the plugin.
 *
 * Labels: 1 to 64 ASCII letters, digits, `-`, `_` or `.` (see
 * `hsm_api::is_valid_operational_key_label`); anything else gets `HSM_ERR_INVALID_ARGUMENT`.
 * A key and its chain outlive the process (kept under `state_dir` or in the HSM).
 */
typedef struct HsmOperationalKeyTable {
  /**
   * Version and size of this table.
   */
  struct HsmTableHeader header;
  /**
   * Creates a P-256 key pair under `label`, or finds the one already there (the same key on
   * every call and run until `delete_key`), and writes its public key as a DER
   * SubjectPublicKeyInfo (id-ecPublicKey, prime256v1) to `*out_public_key`.
   */
  HsmStatus (*create_key)(HsmInstance *instance,
                          struct HsmSlice label,
                          struct HsmBuffer *out_public_key);
  /**
   * The public key under `label`, as `create_key` writes it, without creating one:
   * `HSM_ERR_NOT_FOUND` when there is none. (A backend that derives its keys rather than
   * storing them, such as dice, has one for every label.)
   */
  HsmStatus (*get_public_key)(HsmInstance *instance,
                              struct HsmSlice label,
                              struct HsmBuffer *out_public_key);
  /**
   * ECDSA P-256 signature of `digest` (a 32-byte SHA-256 digest, anything else is
   * `HSM_ERR_INVALID_ARGUMENT`) with the key under `label`, DER-encoded (`Ecdsa-Sig-Value`),
   * as `HsmX509Table.sign_digest` returns ECDSA signatures. `HSM_ERR_NOT_FOUND` without a key.
   */
  HsmStatus (*sign_digest)(HsmInstance *instance,
                           struct HsmSlice label,
                           struct HsmSlice digest,
                           struct HsmBuffer *out_signature);
  /**
   * Stores `pem` (the issued chain as PEM, leaf first, UTF-8) beside the key under `label`,
   * replacing any earlier chain. `HSM_ERR_NOT_FOUND` without a key. The plugin copies it.
   */
  HsmStatus (*store_chain)(HsmInstance *instance, struct HsmSlice label, struct HsmSlice pem);
  /**
   * The chain stored under `label`, byte for byte as `store_chain` got it.
   * `HSM_ERR_NOT_FOUND` when no key or no chain is there.
   */
  HsmStatus (*get_chain)(HsmInstance *instance, struct HsmSlice label, struct HsmBuffer *out_pem);
  /**
   * Removes the key under `label` and its chain (renewal removes the old key only after
   * the new chain is stored). `HSM_ERR_NOT_FOUND` when there is none. Where the key is
   * derived rather than stored (dice), only the chain is removed and `create_key` gives the
   * same key again; a new key needs a new label.
   */
  HsmStatus (*delete_key)(HsmInstance *instance, struct HsmSlice label);
} HsmOperationalKeyTable;

/**
 * The plugin's root table, returned by the entry symbol. Static for the life of the process.
 */
typedef struct HsmPluginTable {
  /**
   * Version and size of this table.
   */
  struct HsmTableHeader header;
  /**
   * Short name used to select the plugin (`dice`, `tpm-sim`, `pkcs11`, ...).
   */
  HsmStaticStr name;
  /**
   * Plugin version, free form (semver recommended).
   */
  HsmStaticStr version;
  /**
   * Who made it.
   */
  HsmStaticStr vendor;
  /**
   * One line saying what it is.
   */
  HsmStaticStr description;
  /**
   * `HSM_CAP_*` bits of the interfaces this plugin implements.
   */
  uint32_t capabilities;
  /**
   * `HSM_THREADING_*`: whether one instance may be called concurrently.
   */
  uint32_t threading;
  /**
   * Creates an instance from `config_len` settings (`config` may be NULL when
   * `config_len` is 0). On success writes the instance to `*out_instance` and leaves
   * `*out_error` empty. On failure leaves `*out_instance` as the host set it (NULL) and may
   * write a readable message to `*out_error` (the host releases it with `release_buffer`).
   *
   * `out_error` may be NULL: then no message is written. `out_instance` is never NULL
   * from hsmkit; answer a NULL one with `HSM_ERR_INVALID_ARGUMENT`, never a crash (the
   * conformance harness checks it).
   *
   * Settings: the keys the plugin declares in `settings` (ABI 1.1), plus `state_dir`.
   * `state_dir` is always passed and always valid: hsmkit and hsm-conformance always pass
   * it, the folder (private to the user running the host) where the plugin keeps what must
   * survive the process, so every plugin accepts that key even if it stores nothing. A
   * device identity (key, certificate, imported or activated key) must outlive the process:
   * `hsmkit enroll-info` and `hsmkit provision` run in different processes, possibly across
   * a reboot. Keep it under `state_dir` (files mode 0600, written atomically), not in memory.
   *
   * Unknown keys: a plugin refuses a key it does not know (one that is neither `state_dir`
   * nor in `settings`) with `HSM_ERR_INVALID_ARGUMENT` and a message naming the key and the
   * valid ones, for example "unknown setting `bogus`; valid settings: tcti, state_dir", so
   * that a typo is an error instead of a silently different device. The Rust SDK does this
   * from the settings a plugin declares, before the plugin's own `create` runs; a C plugin
   * does it by hand (see plugin-sdk/examples/c-plugin). hsm-conformance checks it
   * (`lifecycle.unknown-setting-refused`) for every plugin, ABI 1.0 ones included: the
   * rule is about `create`, which 1.0 has, and only the plugin knows its keys.
   */
  HsmStatus (*create)(const struct HsmKeyValue *config,
                      size_t config_len,
                      HsmInstance **out_instance,
                      struct HsmBuffer *out_error);
  /**
   * Destroys an instance. NULL is a no-op.
   */
  void (*destroy)(HsmInstance *instance);
  /**
   * Copies the message of the last call on this instance that failed on the calling thread
   * into `*out_message` (UTF-8, release it with `release_buffer`) and returns `HSM_OK`.
   * Call it from the thread whose call failed, before that thread's next call on the
   * instance: a concurrent plugin may keep messages per thread.
   *
   * When no call failed (on this thread, on this instance) it returns `HSM_OK` with
   * `*out_message` empty (`data` NULL, `len` 0); hosts show an empty message as "the
   * plugin gave no message". A NULL `instance` or `out_message` gets
   * `HSM_ERR_INVALID_ARGUMENT`.
   */
  HsmStatus (*last_error)(HsmInstance *instance, struct HsmBuffer *out_message);
  /**
   * Releases a buffer this plugin produced, wiping it when it may hold a secret, and
   * leaves it empty. An empty buffer (`data` NULL) and a NULL `buffer` are no-ops. May be
   * called from any thread, concurrently with other calls, and after the instance that
   * produced the buffer was destroyed.
   */
  void (*release_buffer)(struct HsmBuffer *buffer);
  /**
   * TPM interface, or NULL.
   */
  const struct HsmTpmTable *tpm;
  /**
   * X.509 interface, or NULL.
   */
  const struct HsmX509Table *x509;
  /**
   * Symmetric-key interface, or NULL.
   */
  const struct HsmSymmetricKeyTable *symmetric_key;
  /**
   * ABI 1.1: the settings `create` accepts besides `state_dir`, `settings_len` entries
   * (NULL when `settings_len` is 0: a plugin without settings of its own). Every key the
   * plugin reads is declared here, each once, and every other key is refused by `create`
   * (see `create`). `state_dir` is always passed and always valid; it need not be declared.
   * Hosts show the list (`hsmkit plugins info`, `hsm-conformance --list-settings`).
   *
   * Exists only when `header.abi_minor >= 1`; a host reading an ABI 1.0 table (whose
   * `struct_size` ends before this entry) reports its settings as not declared.
   */
  const struct HsmSetting *settings;
  /**
   * ABI 1.1: the number of entries at `settings`.
   */
  size_t settings_len;
  /**
   * ABI 1.2: operational-key interface, or NULL (the plugin cannot hold an operational
   * key). No capability bit announces it: the non-NULL entry is the declaration, so a 1.0
   * or 1.1 host never meets a capability bit it does not know.
   *
   * Exists only when `header.abi_minor >= 2`; a host reading an older table (whose
   * `struct_size` ends before this entry) treats it as NULL.
   */
  const struct HsmOperationalKeyTable *operational_key;
} HsmPluginTable;

/**
 * Callbacks the host offers every plugin. Valid for the life of the process.
 */
typedef struct HsmHostApi {
  /**
   * Version and size of this table.
   */
  struct HsmTableHeader header;
  /**
   * Writes one log line through the host's logger. `level` is one of the `HSM_LOG_*`
   * constants; `message` is UTF-8 and must never contain a secret. May be called from
   * any thread.
   */
  void (*log)(uint32_t level, struct HsmSlice message);
} HsmHostApi;

/**
 * The entry symbol's signature. `host_major`/`host_minor` are the versions the host speaks,
 * `host` its callbacks. The plugin writes its table to `*out_table` (even on a major
 * mismatch, so that the host can name the plugin's version) and returns `HSM_OK`,
 * `HSM_ERR_ABI_MISMATCH`, or another error (then the host reads no message: the entry has
 * no instance).
 */
typedef HsmStatus (*HsmPluginEntryFn)(uint16_t host_major,
                                      uint16_t host_minor,
                                      const struct HsmHostApi *host,
                                      const struct HsmPluginTable **out_table);

/**
 * The call succeeded.
 */
#define HSM_OK 0

/**
 * An argument was NULL, empty, malformed or out of range.
 */
#define HSM_ERR_INVALID_ARGUMENT 1

/**
 * The plugin does not implement this operation (or refuses it by policy, such as exporting
 * a private key).
 */
#define HSM_ERR_NOT_SUPPORTED 2

/**
 * A key, certificate, token or object the call needs does not exist.
 */
#define HSM_ERR_NOT_FOUND 3

/**
 * The hardware or its driver failed (TPM error, PKCS#11 error, I/O error).
 */
#define HSM_ERR_DEVICE 4

/**
 * Authentication to the device failed (wrong PIN, wrong hierarchy password, bad policy).
 */
#define HSM_ERR_AUTHENTICATION 5

/**
 * The operation is not valid in the instance's current state (for example signing with
 * the TPM identity key before one was activated).
 */
#define HSM_ERR_INVALID_STATE 6

/**
 * A bug or an unexpected condition inside the plugin.
 */
#define HSM_ERR_INTERNAL 7

/**
 * The plugin panicked (or threw); the panic was caught at the boundary.
 */
#define HSM_ERR_PANIC 8

/**
 * The host and the plugin speak incompatible ABI majors.
 */
#define HSM_ERR_ABI_MISMATCH 9

#endif  /* HSM_API_H */

#ifndef HSM_API_ENTRY_H
#define HSM_API_ENTRY_H
#ifdef __cplusplus
extern "C" {
#endif

/* The one symbol a plugin exports. See HsmPluginEntryFn. */
HsmStatus hsm_plugin_entry(uint16_t host_major,
                           uint16_t host_minor,
                           const HsmHostApi *host,
                           const HsmPluginTable **out_table);

#ifdef __cplusplus
}
#endif
#endif /* HSM_API_ENTRY_H */
