/* Library version, so a host or firmware can check what it linked. */
#include <stdint.h>

int32_t caps_nn_version(void) { return 100; /* 0.1.0 */ }
