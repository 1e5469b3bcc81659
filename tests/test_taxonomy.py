"""The label schemes are data: shipped taxonomies load, user files work, mistakes fail loudly."""
import pytest
import yaml

from galaxalign.taxonomy import TaxonomyError, decision_tree, list_taxonomies, load_taxonomy


def test_shipped_taxonomies_are_listed():
    assert {"galaxy10_decals", "gz2"} <= set(list_taxonomies())


def test_galaxy10_has_ten_classes_in_astronn_order():
    tax = load_taxonomy("galaxy10_decals")
    assert tax.num_classes == 10
    assert tax.by_id(0).name == "Disturbed Galaxies"
    assert tax.by_id(4).name == "Cigar Shaped Smooth Galaxies"
    assert tax.by_id(9).name == "Edge-on Galaxies with Bulge"


def test_gz2_summary_scheme_has_seven_classes():
    tax = load_taxonomy("gz2")
    assert tax.class_names == [
        "smooth_inbetween", "smooth_round", "smooth_cigar", "edge_on_disk",
        "unbarred_spiral", "barred_spiral", "featured_without_bar_or_spiral",
    ]


def test_every_answer_used_exists_in_the_decision_tree():
    answers = decision_tree().answers
    for name in list_taxonomies():
        for c in load_taxonomy(name).classes:
            for a in c.answers + tuple(x for s in c.symbols for x in s):
                assert a in answers, (name, c.name, a)


def test_volunteer_wording_is_the_first_text_label_source():
    tree = decision_tree()
    assert tree.question("how-rounded").text == "How rounded is it?"
    assert tree.answer("how-rounded_cigar").text == "Cigar shaped"


def test_prompts_expand_every_label_with_every_template():
    tax = load_taxonomy("galaxy10_decals")
    spec = tax.by_id(6)
    prompts = tax.prompts(6)
    assert len(prompts) == len(spec.text_labels) * len(tax.prompt_templates)
    assert spec.text_labels[0] in prompts


def test_class_id_resolves_ids_names_and_keys():
    tax = load_taxonomy("galaxy10_decals")
    assert tax.class_id(3) == 3
    assert tax.class_id("3") == 3
    assert tax.class_id("Merging Galaxies") == 1
    assert tax.class_id("loose_spiral") == 7
    with pytest.raises(KeyError, match="not in taxonomy"):
        tax.class_id("Lenticular")
    with pytest.raises(KeyError):
        tax.class_id(10)


def _ring_taxonomy(tmp_path, answers=("odd-feature_ring",)):
    data = {
        "name": "rings",
        "classes": [
            {"name": "ring", "answers": list(answers), "text_labels": ["ringed galaxy"]},
            {"name": "no ring", "answers": ["disk-edge-on_no"], "text_labels": ["galaxy without a ring"]},
        ],
    }
    path = tmp_path / "rings.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_user_taxonomy_file_loads(tmp_path):
    tax = load_taxonomy(_ring_taxonomy(tmp_path))
    assert tax.name == "rings"
    assert tax.class_names == ["ring", "no ring"]
    assert tax.by_id(0).symbols == (("odd-feature_ring",),)
    assert tax.prompt_templates == ("{label}",)


def test_unknown_answer_names_file_and_class(tmp_path):
    path = _ring_taxonomy(tmp_path, answers=("odd-feature_rings",))
    with pytest.raises(TaxonomyError, match=r"rings\.yaml.*'ring'.*odd-feature_rings"):
        load_taxonomy(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a shipped taxonomy"):
        load_taxonomy(tmp_path / "nope.yaml")


def test_round_trip_through_dict():
    tax = load_taxonomy("galaxy10_decals")
    again = load_taxonomy(tax.to_dict())
    assert again.classes == tax.classes
    assert again.prompt_templates == tax.prompt_templates


def test_class_counts_are_read_and_checked():
    tax = load_taxonomy("galaxy10_decals")
    assert tax.class_counts[4] == 334   # cigar-shaped smooth, the rarest Galaxy10 class
    assert load_taxonomy("gz2").class_counts is None   # no counts in that file
    assert load_taxonomy(tax.to_dict()).class_counts == tax.class_counts
    data = tax.to_dict()
    data["classes"][1]["count"] = -3
    with pytest.raises(TaxonomyError, match=r"class #1 \('Merging Galaxies'\): count must be a non-negative integer"):
        load_taxonomy(data)
