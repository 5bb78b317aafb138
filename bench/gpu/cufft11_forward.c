/* A libcufft.so.11 that forwards to CUDA 13's libcufft.so.12.
 *
 * The astra-toolbox wheel links CUDA 12's cuFFT (libcufft.so.11, versioned symbols) and calls
 * five of its functions (1-D real<->complex plans for the FBP filter). On a machine that ships
 * only CUDA 13's cuFFT, build this next to the wheels and put its folder on LD_LIBRARY_PATH:
 *
 *   gcc -shared -fPIC -Wl,--version-script=cufft11_forward.map -o libcufft.so.11 cufft11_forward.c -ldl
 *
 * (docs/gpu_check.md). The signatures use opaque pointers and ints: the ABI of these five
 * functions is unchanged between the two major versions.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

static void *target(const char *symbol) {
    static void *lib = NULL;
    if (lib == NULL && (lib = dlopen("libcufft.so.12", RTLD_NOW | RTLD_GLOBAL)) == NULL) {
        fprintf(stderr, "libcufft.so.11 forwarder: %s\n", dlerror());
        abort();
    }
    void *fn = dlsym(lib, symbol);
    if (fn == NULL) {
        fprintf(stderr, "libcufft.so.11 forwarder: libcufft.so.12 has no %s\n", symbol);
        abort();
    }
    return fn;
}

#define FORWARD(name, params, args)                                   \
    int name params {                                                 \
        static int (*fn) params = NULL;                               \
        if (fn == NULL) fn = (int (*) params) target(#name);          \
        return fn args;                                               \
    }

FORWARD(cufftPlan1d, (void *plan, int nx, int type, int batch), (plan, nx, type, batch))
FORWARD(cufftExecR2C, (int plan, void *idata, void *odata), (plan, idata, odata))
FORWARD(cufftExecC2R, (int plan, void *idata, void *odata), (plan, idata, odata))
FORWARD(cufftDestroy, (int plan), (plan))
FORWARD(cufftSetStream, (int plan, void *stream), (plan, stream))
