/*
 * A test host that drives a custom HSM exactly as the Azure IoT C SDK's provisioning client
 * does (prov_security_factory / prov_auth_client / iothub_device_auth), written against the
 * public contract in hsmkit_azure_custom_hsm.h and linked against libhsmkit_azure_hsm:
 *
 *   both inits, twice (provisioning and IoT Hub security init); the interface table, refused
 *   when any member is NULL; create; the calls of one attestation; destroy; both deinits,
 *   twice.
 *
 * Usage:
 *   sdk_host tpm [BLOB_FILE DATA]   EK, SRK; with a blob: activate, sign DATA, then sign again
 *                                   with a second handle (as the IoT Hub client does)
 *   sdk_host x509                   certificate, common name, key (or key_error=1)
 *   sdk_host symm [REG KEY_B64]     set_symm_key_info(REG, KEY) (NULL, NULL without them),
 *                                   registration name, symmetric key (or symm_key_error=1)
 *   sdk_host lifecycle              (X.509 plugin) no handle after the last deinit, one again
 *                                   after a new init; a handle refused by another interface
 *   sdk_host symm-misuse            (symmetric plugin) a name without a key, and a key that
 *                                   is not base64, are refused
 *
 * Prints one `name=value` line per value, binary values and PEM text in hex. Exits 0 when
 * every call the SDK needs succeeded (an expected refusal is printed, not fatal), else 1.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsmkit_azure_custom_hsm.h"

static void print_hex(const char *name, const unsigned char *p, size_t n)
{
    printf("%s=", name);
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
    printf("\n");
}

static void print_text_hex(const char *name, const char *s)
{
    print_hex(name, (const unsigned char *)s, strlen(s));
}

static int fail(const char *what)
{
    fprintf(stderr, "sdk_host: %s\n", what);
    return 1;
}

/* What initialize_hsm_system does, once per security init. */
static int init_both(void)
{
    if (hsm_client_x509_init() != 0)
        return fail("hsm_client_x509_init failed");
    if (hsm_client_tpm_init() != 0)
        return fail("hsm_client_tpm_init failed");
    return 0;
}

static void deinit_both(void)
{
    hsm_client_x509_deinit();
    hsm_client_tpm_deinit();
}

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    unsigned char *buf = malloc(65536);
    if (buf == NULL) {
        fclose(f);
        return NULL;
    }
    *len = fread(buf, 1, 65536, f);
    fclose(f);
    return buf;
}

static int run_tpm(int argc, char **argv)
{
    const HSM_CLIENT_TPM_INTERFACE *t = hsm_client_tpm_interface();
    if (t == NULL || t->hsm_client_tpm_create == NULL || t->hsm_client_tpm_destroy == NULL ||
        t->hsm_client_activate_identity_key == NULL || t->hsm_client_get_ek == NULL ||
        t->hsm_client_get_srk == NULL || t->hsm_client_sign_with_identity == NULL)
        return fail("TPM interface with a NULL member");

    HSM_CLIENT_HANDLE h = t->hsm_client_tpm_create();
    if (h == NULL)
        return fail("hsm_client_tpm_create returned NULL");
    unsigned char *ek = NULL, *srk = NULL;
    size_t ek_len = 0, srk_len = 0;
    if (t->hsm_client_get_ek(h, &ek, &ek_len) != 0)
        return fail("hsm_client_get_ek failed");
    if (t->hsm_client_get_srk(h, &srk, &srk_len) != 0)
        return fail("hsm_client_get_srk failed");
    print_hex("ek", ek, ek_len);
    print_hex("srk", srk, srk_len);
    free(ek);
    free(srk);

    if (argc >= 4) {
        size_t blob_len = 0;
        unsigned char *blob = read_file(argv[2], &blob_len);
        if (blob == NULL)
            return fail("cannot read the blob file");
        /* The challenge, then the SAS signature, then the same blob again once assigned. */
        if (t->hsm_client_activate_identity_key(h, blob, blob_len) != 0)
            return fail("hsm_client_activate_identity_key failed");
        unsigned char *sig = NULL;
        size_t sig_len = 0;
        const char *data = argv[3];
        if (t->hsm_client_sign_with_identity(h, (const unsigned char *)data, strlen(data), &sig,
                                             &sig_len) != 0)
            return fail("hsm_client_sign_with_identity failed");
        print_hex("signature", sig, sig_len);
        free(sig);
        if (t->hsm_client_activate_identity_key(h, blob, blob_len) != 0)
            return fail("the second hsm_client_activate_identity_key failed");
        free(blob);
        t->hsm_client_tpm_destroy(h);

        /* The IoT Hub client's own handle signs with the persisted identity key. */
        HSM_CLIENT_HANDLE h2 = t->hsm_client_tpm_create();
        if (h2 == NULL)
            return fail("the second hsm_client_tpm_create returned NULL");
        if (t->hsm_client_sign_with_identity(h2, (const unsigned char *)data, strlen(data), &sig,
                                             &sig_len) != 0)
            return fail("hsm_client_sign_with_identity on a second handle failed");
        print_hex("signature2", sig, sig_len);
        free(sig);
        t->hsm_client_tpm_destroy(h2);
    } else {
        t->hsm_client_tpm_destroy(h);
    }
    return 0;
}

static int run_x509(void)
{
    const HSM_CLIENT_X509_INTERFACE *x = hsm_client_x509_interface();
    if (x == NULL || x->hsm_client_x509_create == NULL || x->hsm_client_x509_destroy == NULL ||
        x->hsm_client_get_cert == NULL || x->hsm_client_get_key == NULL ||
        x->hsm_client_get_common_name == NULL)
        return fail("X.509 interface with a NULL member");
    HSM_CLIENT_HANDLE h = x->hsm_client_x509_create();
    if (h == NULL)
        return fail("hsm_client_x509_create returned NULL");
    /* load_registration_id: the common name first, then the credentials. */
    char *cn = x->hsm_client_get_common_name(h);
    if (cn == NULL)
        return fail("hsm_client_get_common_name returned NULL");
    printf("common_name=%s\n", cn);
    free(cn);
    char *cert = x->hsm_client_get_cert(h);
    if (cert == NULL)
        return fail("hsm_client_get_cert returned NULL");
    print_text_hex("cert", cert);
    free(cert);
    char *key = x->hsm_client_get_key(h);
    if (key == NULL) {
        printf("key_error=1\n");
    } else {
        print_text_hex("key", key);
        free(key);
    }
    x->hsm_client_x509_destroy(h);
    return 0;
}

static int run_symm(int argc, char **argv)
{
    const HSM_CLIENT_KEY_INTERFACE *k = hsm_client_key_interface();
    if (k == NULL || k->hsm_client_key_create == NULL || k->hsm_client_key_destroy == NULL ||
        k->hsm_client_get_symm_key == NULL || k->hsm_client_get_registration_name == NULL ||
        k->hsm_client_set_symm_key_info == NULL)
        return fail("symmetric-key interface with a NULL member");
    const char *reg = argc >= 4 ? argv[2] : NULL;
    const char *key_b64 = argc >= 4 ? argv[3] : NULL;
    /* prov_auth_create: create, then set_symm_key_info with what the application set. */
    HSM_CLIENT_HANDLE h = k->hsm_client_key_create();
    if (h == NULL)
        return fail("hsm_client_key_create returned NULL");
    if (k->hsm_client_set_symm_key_info(h, reg, key_b64) != 0)
        return fail("hsm_client_set_symm_key_info failed");
    char *name = k->hsm_client_get_registration_name(h);
    if (name == NULL)
        return fail("hsm_client_get_registration_name returned NULL");
    printf("registration_name=%s\n", name);
    free(name);
    char *key = k->hsm_client_get_symm_key(h);
    if (key == NULL) {
        printf("symm_key_error=1\n");
    } else {
        printf("symm_key=%s\n", key);
        free(key);
    }
    k->hsm_client_key_destroy(h);
    return 0;
}

static int run_lifecycle(void)
{
    const HSM_CLIENT_X509_INTERFACE *x = hsm_client_x509_interface();
    const HSM_CLIENT_KEY_INTERFACE *k = hsm_client_key_interface();
    /* Undo main's two rounds of inits: no instance may be handed out any more. */
    deinit_both();
    deinit_both();
    HSM_CLIENT_HANDLE h = x->hsm_client_x509_create();
    if (h != NULL)
        return fail("hsm_client_x509_create succeeded after the last deinit");
    if (init_both() != 0)
        return fail("init after the last deinit failed");
    h = x->hsm_client_x509_create();
    if (h == NULL)
        return fail("hsm_client_x509_create failed after a new init");
    char *cn = x->hsm_client_get_common_name(h);
    if (cn == NULL)
        return fail("hsm_client_get_common_name failed after a new init");
    printf("common_name=%s\n", cn);
    free(cn);
    char *wrong = k->hsm_client_get_registration_name(h);
    if (wrong != NULL)
        return fail("an X.509 handle was accepted by the symmetric-key interface");
    printf("wrong_handle_refused=1\n");
    x->hsm_client_x509_destroy(h);
    return 0;
}

static int run_symm_misuse(void)
{
    const HSM_CLIENT_KEY_INTERFACE *k = hsm_client_key_interface();
    HSM_CLIENT_HANDLE h = k->hsm_client_key_create();
    if (h == NULL)
        return fail("hsm_client_key_create returned NULL");
    if (k->hsm_client_set_symm_key_info(h, "misuse-device", NULL) == 0)
        return fail("a registration name without a key was accepted");
    if (k->hsm_client_set_symm_key_info(h, "misuse-device", "not base64!") == 0)
        return fail("a key that is not base64 was accepted");
    if (k->hsm_client_get_symm_key(h) != NULL)
        return fail("get_symm_key returned a key after refused set_symm_key_info calls");
    printf("misuse_refused=1\n");
    k->hsm_client_key_destroy(h);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return fail("usage: sdk_host tpm|x509|symm ...");
    /* Provisioning security init, then the IoT Hub one: both initialise the HSM system. */
    if (init_both() != 0 || init_both() != 0)
        return 1;
    int rc;
    if (strcmp(argv[1], "tpm") == 0)
        rc = run_tpm(argc, argv);
    else if (strcmp(argv[1], "x509") == 0)
        rc = run_x509();
    else if (strcmp(argv[1], "symm") == 0)
        rc = run_symm(argc, argv);
    else if (strcmp(argv[1], "lifecycle") == 0)
        rc = run_lifecycle();
    else if (strcmp(argv[1], "symm-misuse") == 0)
        rc = run_symm_misuse();
    else
        rc = fail("unknown mode");
    deinit_both();
    deinit_both();
    fflush(stdout);
    return rc;
}
