# Sources of the tokenizers (part of kvplan_formats).
list(APPEND KVPLAN_TOKENIZER_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/Tokenizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/TokenizerSpmVocab.cpp
  ${CMAKE_CURRENT_LIST_DIR}/TokenizerHfBpe.cpp
)
