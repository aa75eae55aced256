# Writes INPUT as a C++ raw string literal into OUTPUT (for #include inside
# an initialiser). Run at build time, so editing INPUT rebuilds its users.
file(READ ${INPUT} _text)
string(FIND "${_text}" ")kvplan_embed\"" _bad)
if(NOT _bad EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains the raw-string delimiter")
endif()
file(WRITE ${OUTPUT}.tmp "R\"kvplan_embed(${_text})kvplan_embed\"\n")
file(COPY_FILE ${OUTPUT}.tmp ${OUTPUT} ONLY_IF_DIFFERENT)
