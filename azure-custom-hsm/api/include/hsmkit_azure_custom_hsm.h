/*
 * The Azure IoT C SDK custom-HSM contract, as hsmkit implements and hosts it: type names and
 * member order are those of the SDK's hsm_client_data.h, written here from the public contract.
 *
 * - Every interface has create (NULL = failure) and destroy.
 * - int results: 0 is success. Pointer getters return NULL on failure.
 * - Everything an HSM returns is malloc'ed; the caller releases it with free().
 * - Strings passed to set_symm_key_info are copied by the HSM.
 * - EK/SRK: marshalled TPM2B_PUBLIC bytes. sign_with_identity: raw 32-byte HMAC-SHA256.
 * - Certificate: PEM, leaf first. Key: PEM private key (in the library's memory) or a token.
 * - hsm_client_*_init may be called more than once and must be idempotent; 0 is success.
 * - The SDK refuses a table with any NULL member.
 */

#ifndef HSMKIT_AZURE_CUSTOM_HSM_H
#define HSMKIT_AZURE_CUSTOM_HSM_H

/* Generated from azure-custom-hsm/api/src by cbindgen (tests/header.rs). Do not edit. */

#include <stddef.h>

/**
 * An opaque handle made by an interface's `create`.
 */
typedef void *HSM_CLIENT_HANDLE;

/**
 * Creates a handle; NULL on failure.
 */
typedef HSM_CLIENT_HANDLE (*HSM_CLIENT_CREATE)(void);

/**
 * Destroys a handle made by the same interface's `create`.
 */
typedef void (*HSM_CLIENT_DESTROY)(HSM_CLIENT_HANDLE handle);

/**
 * TPM: activates (imports) the identity key from a DPS `authenticationKey` blob.
 */
typedef int (*HSM_CLIENT_ACTIVATE_IDENTITY_KEY)(HSM_CLIENT_HANDLE handle, const unsigned char *key, size_t key_len);

/**
 * TPM: the endorsement key as a marshalled `TPM2B_PUBLIC`, `malloc`ed into `*key`.
 */
typedef int (*HSM_CLIENT_GET_ENDORSEMENT_KEY)(HSM_CLIENT_HANDLE handle, unsigned char **key, size_t *key_len);

/**
 * TPM: the storage root key as a marshalled `TPM2B_PUBLIC`, `malloc`ed into `*key`.
 */
typedef int (*HSM_CLIENT_GET_STORAGE_ROOT_KEY)(HSM_CLIENT_HANDLE handle, unsigned char **key, size_t *key_len);

/**
 * TPM: HMAC-SHA256 of `data` with the identity key, `malloc`ed into `*signed_value`.
 */
typedef int (*HSM_CLIENT_SIGN_WITH_IDENTITY)(HSM_CLIENT_HANDLE handle, const unsigned char *data, size_t data_len, unsigned char **signed_value, size_t *signed_len);

/**
 * The TPM interface (`hsm_client_tpm_interface()`).
 */
typedef struct HSM_CLIENT_TPM_INTERFACE {
  /**
   * Creates a handle.
   */
  HSM_CLIENT_CREATE hsm_client_tpm_create;
  /**
   * Destroys a handle.
   */
  HSM_CLIENT_DESTROY hsm_client_tpm_destroy;
  /**
   * Activates the identity key from a DPS blob.
   */
  HSM_CLIENT_ACTIVATE_IDENTITY_KEY hsm_client_activate_identity_key;
  /**
   * Reads the endorsement key.
   */
  HSM_CLIENT_GET_ENDORSEMENT_KEY hsm_client_get_ek;
  /**
   * Reads the storage root key.
   */
  HSM_CLIENT_GET_STORAGE_ROOT_KEY hsm_client_get_srk;
  /**
   * Signs with the identity key.
   */
  HSM_CLIENT_SIGN_WITH_IDENTITY hsm_client_sign_with_identity;
} HSM_CLIENT_TPM_INTERFACE;

/**
 * X.509: the certificate chain as a `malloc`ed PEM string, leaf first.
 */
typedef char *(*HSM_CLIENT_GET_CERTIFICATE)(HSM_CLIENT_HANDLE handle);

/**
 * X.509: the private key as a `malloc`ed PEM string (or an opaque token).
 */
typedef char *(*HSM_CLIENT_GET_ALIAS_KEY)(HSM_CLIENT_HANDLE handle);

/**
 * X.509: the leaf's common name (the registration id) as a `malloc`ed string.
 */
typedef char *(*HSM_CLIENT_GET_COMMON_NAME)(HSM_CLIENT_HANDLE handle);

/**
 * The X.509 interface (`hsm_client_x509_interface()`).
 */
typedef struct HSM_CLIENT_X509_INTERFACE {
  /**
   * Creates a handle.
   */
  HSM_CLIENT_CREATE hsm_client_x509_create;
  /**
   * Destroys a handle.
   */
  HSM_CLIENT_DESTROY hsm_client_x509_destroy;
  /**
   * Reads the certificate chain (PEM, leaf first).
   */
  HSM_CLIENT_GET_CERTIFICATE hsm_client_get_cert;
  /**
   * Reads the private key.
   */
  HSM_CLIENT_GET_ALIAS_KEY hsm_client_get_key;
  /**
   * Reads the leaf's common name.
   */
  HSM_CLIENT_GET_COMMON_NAME hsm_client_get_common_name;
} HSM_CLIENT_X509_INTERFACE;

/**
 * Symmetric key: the key, base64, as a `malloc`ed string.
 */
typedef char *(*HSM_CLIENT_GET_SYMMETRICAL_KEY)(HSM_CLIENT_HANDLE handle);

/**
 * Symmetric key: the registration id as a `malloc`ed string.
 */
typedef char *(*HSM_CLIENT_GET_REGISTRATION_NAME)(HSM_CLIENT_HANDLE handle);

/**
 * Symmetric key: stores a registration id and a base64 key (the HSM copies both).
 */
typedef int (*HSM_CLIENT_SET_SYMMETRICAL_KEY_INFO)(HSM_CLIENT_HANDLE handle, const char *reg_name, const char *symm_key);

/**
 * The symmetric-key interface (`hsm_client_key_interface()`).
 */
typedef struct HSM_CLIENT_KEY_INTERFACE {
  /**
   * Creates a handle.
   */
  HSM_CLIENT_CREATE hsm_client_key_create;
  /**
   * Destroys a handle.
   */
  HSM_CLIENT_DESTROY hsm_client_key_destroy;
  /**
   * Reads the key (base64).
   */
  HSM_CLIENT_GET_SYMMETRICAL_KEY hsm_client_get_symm_key;
  /**
   * Reads the registration id.
   */
  HSM_CLIENT_GET_REGISTRATION_NAME hsm_client_get_registration_name;
  /**
   * Stores a registration id and key.
   */
  HSM_CLIENT_SET_SYMMETRICAL_KEY_INFO hsm_client_set_symm_key_info;
} HSM_CLIENT_KEY_INTERFACE;

#endif  /* HSMKIT_AZURE_CUSTOM_HSM_H */

#ifdef __cplusplus
extern "C" {
#endif

int hsm_client_tpm_init(void);
void hsm_client_tpm_deinit(void);
int hsm_client_x509_init(void);
void hsm_client_x509_deinit(void);

const HSM_CLIENT_TPM_INTERFACE *hsm_client_tpm_interface(void);
const HSM_CLIENT_X509_INTERFACE *hsm_client_x509_interface(void);
const HSM_CLIENT_KEY_INTERFACE *hsm_client_key_interface(void);

#ifdef __cplusplus
}
#endif
