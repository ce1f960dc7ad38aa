{
  # vspc's own native addon: ptys and unix socket peer credentials (Linux).
  # Built by `npm ci` / `npm install` (the package's install script runs node-gyp here,
  # into src/native/build/, so that the repository's top level stays as it is);
  # see docs/decisions/0010-own-native-addon-for-ptys.md.
  "targets": [
    {
      "target_name": "vspc_native",
      "sources": ["vspc_native.c"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
