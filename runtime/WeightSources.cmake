# Sources of the checkpoint readers (part of kvplan_formats).
list(APPEND KVPLAN_WEIGHT_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/WeightFormats.cpp
  ${CMAKE_CURRENT_LIST_DIR}/LlamaCCheckpoint.cpp
  ${CMAKE_CURRENT_LIST_DIR}/WeightGguf.cpp
  ${CMAKE_CURRENT_LIST_DIR}/Safetensors.cpp
  ${CMAKE_CURRENT_LIST_DIR}/WeightRandom.cpp
  ${CMAKE_CURRENT_LIST_DIR}/Progress.cpp
)
