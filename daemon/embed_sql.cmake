# Turn schema.sql and registry.sql into C strings (hex bytes, so any text is safe).
set(out "/* generated from schema.sql and registry.sql; do not edit */\n")
foreach(name schema registry)
  file(READ ${IN_DIR}/${name}.sql hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(APPEND out "const char ${name}_sql[] = {${bytes} 0x00};\n")
endforeach()
file(WRITE ${OUT} "${out}")
