from workers.seal.grade import contains_answer, normalize_answer, token_f1


def test_normalize_strips_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The  Northern Skies, Trust! ") == "northern skies trust"
    assert normalize_answer("An apple a day") == "apple day"


def test_normalize_keeps_articles_inside_words():
    assert normalize_answer("Theatre anthem") == "theatre anthem"


def test_contains_answer_normalized():
    assert contains_answer("Since 2015 it is run by the Northern Skies Trust.", "the Northern Skies Trust")
    assert contains_answer("It was completed in 1987.", "1987")
    assert contains_answer("Comet Tessari-4", "Tessari 4")


def test_contains_answer_respects_word_boundaries():
    assert not contains_answer("In 19870 it opened", "1987")
    assert not contains_answer("a party", "art")
    assert not contains_answer("anything", "")


def test_token_f1():
    assert token_f1("Mount Ceddra", "Mount Ceddra") == 1.0
    assert token_f1("Mount Ceddra in Lissemark", "Mount Ceddra") == 2 * (2 / 4) * 1.0 / (2 / 4 + 1.0)
    assert token_f1("Lissemark", "Mount Ceddra") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("", "x") == 0.0
