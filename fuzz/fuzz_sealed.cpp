// Sealed datasets: the file header (data::parse_sealed_header, and the chunk geometry the
// enclave derives from it) and the decrypted payload (data::decode_payload, both splits).
// Both parsers run on every input: one starts "DKSEALD1", the other "DKDATA01". (The
// chunks between them are authenticated by XChaCha20-Poly1305 before any byte is decoded,
// so the payload decoder sees only what the data owner sealed; it is fuzzed regardless.)
#include <cstddef>
#include <cstdint>

#include "data/sealed_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace darknight;
  auto h = data::parse_sealed_header(data, size);
  if (h.ok()) {
    const data::SealedHeader& s = h.value();
    const uint64_t last = s.chunk_count - 1;
    // The enclave's use: sizes add up to the file size, each chunk inside it.
    if (s.frame_offset(last) + data::kChunkFrameBytes + s.plain_size(last) + data::kChunkTagBytes !=
            s.file_size() ||
        s.plain_size(last) == 0 || s.plain_size(last) > s.chunk_bytes)
      __builtin_trap();
    (void)s.associated_data(last);
  }
  (void)data::decode_payload(data, size, data::Split::train, 0);
  (void)data::decode_payload(data, size, data::Split::test, 2);
  return 0;
}
