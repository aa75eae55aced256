# Writes Version.h with the current git hash; run at every build (configure_file
# leaves the file untouched when nothing changed, so nothing rebuilds then).
execute_process(COMMAND git rev-parse --short=12 HEAD
                WORKING_DIRECTORY ${SOURCE_DIR}
                OUTPUT_VARIABLE KVPLAN_GIT_HASH OUTPUT_STRIP_TRAILING_WHITESPACE
                ERROR_QUIET)
if(NOT KVPLAN_GIT_HASH)
  set(KVPLAN_GIT_HASH "unknown")
endif()
execute_process(COMMAND git status --porcelain --untracked-files=no
                WORKING_DIRECTORY ${SOURCE_DIR}
                OUTPUT_VARIABLE _dirty OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(_dirty)
  set(KVPLAN_GIT_HASH "${KVPLAN_GIT_HASH}-dirty")
endif()
configure_file(${SOURCE_DIR}/cmake/Version.h.in ${OUTPUT} @ONLY)
