/* Names of codes, states and jitters; version information. */
#include "internal.h"

#include <string.h>

#define BUTTRESS__ERROR_TEXT(name, value, text) case value: return text;
#define BUTTRESS__ERROR_NAME(name, value, text) case value: return "BUTTRESS_" #name;

const char *
buttress_strerror(int code)
{
  switch (code) {
    BUTTRESS_ERRORS(BUTTRESS__ERROR_TEXT)
  }
  return "unknown error";
}

const char *
buttress_errname(int code)
{
  switch (code) {
    BUTTRESS_ERRORS(BUTTRESS__ERROR_NAME)
  }
  return "BUTTRESS_UNKNOWN";
}

static const char *const state_names[BUTTRESS_STATE_COUNT] = {
  "closed", "open", "half_open", "forced_open", "disabled",
};

const char *
buttress_state_name(int state)
{
  if (state < 0 || state >= BUTTRESS_STATE_COUNT) return "unknown";
  return state_names[state];
}

static const char *const jitter_names[] = {"none", "full", "equal", "decorrelated"};
#define JITTER_COUNT ((int)(sizeof jitter_names / sizeof jitter_names[0]))

int
buttress_jitter_parse(const char *name)
{
  if (name == NULL) return BUTTRESS_EINVAL;
  for (int i = 0; i < JITTER_COUNT; i++)
    if (strcmp(name, jitter_names[i]) == 0) return i;
  return BUTTRESS_EINVAL;
}

const char *
buttress_jitter_name(int jitter)
{
  if (jitter < 0 || jitter >= JITTER_COUNT) return "unknown";
  return jitter_names[jitter];
}

int
buttress_abi_version(void)
{
  return BUTTRESS__ABI;
}
