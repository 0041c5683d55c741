"""Writes prompts.jsonl: chat questions about capital cities, each with a word limit.

python make_prompts.py   (deterministic: the same file every time)
"""

import json
import random

CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
    "Egypt": "Cairo", "Canada": "Ottawa", "Australia": "Canberra", "Brazil": "Brasilia", "Kenya": "Nairobi",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Poland": "Warsaw", "Greece": "Athens",
    "Portugal": "Lisbon", "Ireland": "Dublin", "Austria": "Vienna", "Hungary": "Budapest", "Peru": "Lima",
    "Chile": "Santiago", "Argentina": "Buenos Aires", "Mexico": "Mexico City", "China": "Beijing",
    "India": "New Delhi", "Russia": "Moscow", "Turkey": "Ankara", "Thailand": "Bangkok", "Vietnam": "Hanoi",
    "South Korea": "Seoul", "Indonesia": "Jakarta", "the Philippines": "Manila", "Iran": "Tehran", "Iraq": "Baghdad",
    "Denmark": "Copenhagen", "the Netherlands": "Amsterdam", "Belgium": "Brussels", "Switzerland": "Bern",
    "the Czech Republic": "Prague", "Cuba": "Havana", "Colombia": "Bogota", "Nigeria": "Abuja", "Morocco": "Rabat",
    "Ethiopia": "Addis Ababa", "Ukraine": "Kyiv", "Romania": "Bucharest", "Pakistan": "Islamabad",
    "New Zealand": "Wellington", "Scotland": "Edinburgh", "Iceland": "Reykjavik",
}  # fmt: skip
TEMPLATES = [
    "In at most {n} words: what is the capital of {country}?",
    "What is the capital of {country}? Reply in {n} words or fewer.",
    "Name the capital city of {country}. Use no more than {n} words.",
    "Answer in at most {n} words. Which city is the capital of {country}?",
]
LIMITS = (3, 4, 5)


def rows():
    for country, capital in CAPITALS.items():
        for template in TEMPLATES:
            n = random.Random(f"{country}/{template}").choice(LIMITS)
            question = template.format(n=n, country=country)
            yield {"prompt": [{"role": "user", "content": question}], "answer": capital, "max_words": n}


if __name__ == "__main__":
    with open("prompts.jsonl", "w") as file:
        for row in rows():
            file.write(json.dumps(row) + "\n")
