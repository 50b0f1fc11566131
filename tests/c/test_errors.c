/*
 * Names and messages: every code of the X-macro table is named, unknown
 * codes get a non-NULL string; state and jitter names.
 */
#include <limits.h>

#include "util.h"

struct code {
  int value;
  const char *name;
  const char *text;
};

/* The table itself, expanded here, is the expectation. */
#define AS_CODE(name, value, text) {value, #name, text},
static const struct code codes[] = {BUTTRESS_ERRORS(AS_CODE)};
#undef AS_CODE
enum { NCODES = sizeof codes / sizeof codes[0] };

static void
test_strerror_names_every_code(void **state)
{
  (void)state;
  for (size_t i = 0; i < NCODES; i++) {
    const char *msg = buttress_strerror(codes[i].value);
    assert_non_null(msg);
    assert_string_equal(msg, codes[i].text);
  }
}

/* The name is the table's, with or without the BUTTRESS_ prefix. */
static void
test_errname_names_every_code(void **state)
{
  (void)state;
  for (size_t i = 0; i < NCODES; i++) {
    const char *name = buttress_errname(codes[i].value);
    assert_non_null(name);
    const char *bare = strncmp(name, "BUTTRESS_", 9) == 0 ? name + 9 : name;
    if (strcmp(bare, codes[i].name) != 0)
      fail_msg("errname(%d) is \"%s\", expected \"%s\"", codes[i].value, name,
               codes[i].name);
  }
}

static void
test_codes_are_distinct_and_signed_as_documented(void **state)
{
  (void)state;
  for (size_t i = 0; i < NCODES; i++) {
    for (size_t j = i + 1; j < NCODES; j++) {
      assert_int_not_equal(codes[i].value, codes[j].value);
      assert_string_not_equal(buttress_errname(codes[i].value),
                              buttress_errname(codes[j].value));
    }
  }
  /* 0 ok, policy outcomes > 0, caller errors < 0. */
  assert_int_equal(BUTTRESS_OK, 0);
  assert_true(BUTTRESS_OPEN > 0 && BUTTRESS_EXHAUSTED > 0 && BUTTRESS_DEADLINE > 0 &&
              BUTTRESS_BUDGET > 0 && BUTTRESS_STALE > 0 && BUTTRESS_NEED_CLOCK > 0);
  assert_true(BUTTRESS_EINVAL < 0 && BUTTRESS_EABI < 0 && BUTTRESS_ENOSPC < 0 &&
              BUTTRESS_ECONFIG < 0 && BUTTRESS_ESYS < 0 &&
              BUTTRESS_ENAMETOOLONG < 0 && BUTTRESS_ENOENT < 0);
}

static int
is_known(int value)
{
  for (size_t i = 0; i < NCODES; i++)
    if (codes[i].value == value)
      return 1;
  return 0;
}

static void
test_unknown_codes(void **state)
{
  (void)state;
  /* Just past both ends of the table (it grows), and far away. */
  int lowest = 0, highest = 0;
  for (size_t i = 0; i < NCODES; i++) {
    lowest = codes[i].value < lowest ? codes[i].value : lowest;
    highest = codes[i].value > highest ? codes[i].value : highest;
  }
  const int unknown[] = {highest + 1, lowest - 1, 1000, -1000, INT_MAX, INT_MIN, INT_MIN + 1};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    assert_false(is_known(unknown[i]));
    const char *msg = buttress_strerror(unknown[i]);
    const char *name = buttress_errname(unknown[i]);
    assert_non_null(msg);
    assert_non_null(name);
    assert_string_equal(msg, "unknown error");
  }
}

static void
test_state_names(void **state)
{
  (void)state;
  assert_string_equal(buttress_state_name(BUTTRESS_STATE_CLOSED), "closed");
  assert_string_equal(buttress_state_name(BUTTRESS_STATE_OPEN), "open");
  assert_string_equal(buttress_state_name(BUTTRESS_STATE_HALF_OPEN), "half_open");
  assert_string_equal(buttress_state_name(BUTTRESS_STATE_FORCED_OPEN), "forced_open");
  assert_string_equal(buttress_state_name(BUTTRESS_STATE_DISABLED), "disabled");
  assert_string_equal(buttress_state_name(BUTTRESS_STATE_NONE), "unknown");
  assert_string_equal(buttress_state_name(BUTTRESS_STATE_COUNT), "unknown");
  assert_string_equal(buttress_state_name(INT_MIN), "unknown");
  assert_string_equal(buttress_state_name(INT_MAX), "unknown");
}

static void
test_jitter_names_round_trip(void **state)
{
  (void)state;
  const char *names[] = {"none", "full", "equal", "decorrelated"};
  for (int j = BUTTRESS_JITTER_NONE; j <= BUTTRESS_JITTER_DECORRELATED; j++) {
    assert_string_equal(buttress_jitter_name(j), names[j]);
    assert_int_equal(buttress_jitter_parse(names[j]), j);
  }
  const char *bad[] = {"", "Full", "FULL", "fullx", "ful", "random", " full"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_rc(buttress_jitter_parse(bad[i]), BUTTRESS_EINVAL);
  assert_rc(buttress_jitter_parse(NULL), BUTTRESS_EINVAL);
  assert_non_null(buttress_jitter_name(4));
  assert_non_null(buttress_jitter_name(-1));
}

static void
test_version_and_abi(void **state)
{
  (void)state;
  assert_true(buttress_abi_version() > 0);
  assert_true(strlen(BUTTRESS_VERSION) > 0);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_strerror_names_every_code),
      cmocka_unit_test(test_errname_names_every_code),
      cmocka_unit_test(test_codes_are_distinct_and_signed_as_documented),
      cmocka_unit_test(test_unknown_codes),
      cmocka_unit_test(test_state_names),
      cmocka_unit_test(test_jitter_names_round_trip),
      cmocka_unit_test(test_version_and_abi),
  };
  return cmocka_run_group_tests_name("errors", tests, NULL, NULL);
}
